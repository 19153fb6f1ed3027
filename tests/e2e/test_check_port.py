"""`v6nat check --port`: for a published port, one line per reason it could be unreachable, against a
real dockerd and daemon in the lab: a working port, a loopback-only binding, a port nobody publishes,
a bad source policy label, a ban on the port, a daemon that does not answer, programs detached."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
from docker.models.containers import Container
from docker.models.networks import Network

from e2e_support import V6nat, eventually, tcp_echo_server
from v6nat_ebpf.lab import Lab

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def published(lab: Lab, v6nat: V6nat) -> Iterator[Container]:
    net: Network = lab.create_network("checkport", "fd00:9::/64")
    web = lab.run_container("check-web", net, tcp_echo_server(), ports={"80/tcp": 8080})
    local = lab.run_container("check-local", net, tcp_echo_server(), ports={"80/tcp": ("127.0.0.1", 9090)})
    eventually(lambda: lab.probe_peer(lab.host_addr, 8080, timeout_s=1).peer, timeout=10, what="web answers")
    yield web
    for c in (web, local):
        c.remove(force=True)


def check(v6nat: V6nat, port: str, *extra: str) -> tuple[int, list[dict[str, Any]]]:
    r = v6nat.cli("check", "--port", port, "--json", "--pin-path", v6nat.lab.pin_path, "--docker-host",
                  v6nat.lab.docker_url, "--metrics-listen", v6nat.listen, *extra, check=False)
    return r.returncode, json.loads(r.stdout)


def lines(findings: list[dict[str, Any]], status: str) -> list[str]:
    return [f"{f['what']}: {f['detail']}" for f in findings if f["status"] == status]


def test_a_working_port_is_ok_on_every_line(v6nat: V6nat, published: Container) -> None:
    code, findings = check(v6nat, "8080/tcp")
    assert code == 0 and lines(findings, "fail") == [], lines(findings, "fail")
    ok = lines(findings, "ok")
    assert any(line.startswith("daemon: ready") for line in ok)
    assert any("check-web: published on network checkport" in line for line in ok)
    assert any(line.startswith("datapath: every host address:8080/tcp -> [fd00:9::") for line in ok)
    assert any(line.startswith("programs: attached") for line in ok)


def test_a_loopback_binding_says_why(v6nat: V6nat, published: Container) -> None:
    code, findings = check(v6nat, "9090/tcp")
    assert code == 1
    assert any("check-local" in line and "127.0.0.1" in line and "IPv4" in line for line in lines(findings, "fail"))


def test_a_port_nobody_publishes(v6nat: V6nat, published: Container) -> None:
    code, findings = check(v6nat, "9999/udp")
    assert code == 1
    assert any("no container publishes 9999/udp" in line for line in lines(findings, "fail"))


def test_a_bad_policy_label_and_a_ban(v6nat: V6nat, published: Container) -> None:
    bad = v6nat.lab.run_container("check-badpolicy", "checkport", tcp_echo_server(), ports={"80/tcp": 8181},
                                  labels={"v6nat.allow": "10.0.0.0/8"})
    try:
        code, findings = check(v6nat, "8181/tcp")
        assert code == 1
        assert any(line.startswith("Docker: container check-badpolicy: v6nat.allow='10.0.0.0/8' is not a list of "
                                   "IPv6 prefixes") for line in lines(findings, "fail")), lines(findings, "fail")
    finally:
        bad.remove(force=True)
    v6nat.cli("ban", "2001:db8:bad::/48", "--port", "8080/tcp", "--pin-path", v6nat.lab.pin_path)
    try:
        code, findings = check(v6nat, "8080/tcp")
        assert code == 0 and lines(findings, "warn") == [
            "bans: 1 ban covers 8080/tcp, their sources are dropped: 2001:db8:bad::/48 (see `v6nat bans`)"]
    finally:
        v6nat.cli("unban", "2001:db8:bad::/48", "--port", "8080/tcp", "--pin-path", v6nat.lab.pin_path)
    assert lines(check(v6nat, "8080/tcp")[1], "warn") == []


def test_a_daemon_that_does_not_answer(v6nat: V6nat, published: Container) -> None:
    code, findings = check(v6nat, "8080/tcp", "--metrics-listen", "[::1]:1")
    assert code == 1 and any(line.startswith("daemon: no v6nat daemon answering") for line in lines(findings, "fail"))


def test_detached_programs(lab: Lab, v6nat: V6nat, published: Container) -> None:
    lab.exec(lab.host_ns, ["tc", "qdisc", "del", "dev", lab.public_iface, "clsact"])
    try:
        code, findings = check(v6nat, "8080/tcp")
        assert code == 1 and any(line.startswith("programs: detached") for line in lines(findings, "fail"))
    finally:
        v6nat.stop()
        v6nat.start()  # attaches again
    assert check(v6nat, "8080/tcp")[0] == 0
