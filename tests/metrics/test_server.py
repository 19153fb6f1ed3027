"""The metrics HTTP server: listen address parsing, /healthz, /readyz, /metrics, /status and bad input."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

import pytest

from v6nat_ebpf.datapath import Datapath
from v6nat_ebpf.errors import V6natError
from v6nat_ebpf.commands.status import render_status
from v6nat_ebpf.config import parse_listen
from v6nat_ebpf.observe.server import fetch_status, start_metrics_server
from v6nat_ebpf.observe.stats import ControlPlaneStats


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("[::1]:9661", ("::1", 9661)), ("127.0.0.1:0", ("127.0.0.1", 0)), ("[2001:db8::1]:80", ("2001:db8::1", 80))],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["::1:9661", "[::1]", "localhost:9661", "[::1]:70000", "[::1]:x", "", "1.2.3.4"])
def test_parse_listen_rejects_bad_addresses_in_one_line(listen: str) -> None:
    with pytest.raises(V6natError, match=r"^--metrics-listen .*expected \[IPv6-address\]:port") as err:
        parse_listen(listen)
    assert "\n" not in str(err.value)


def test_readyz_follows_adoption_attachment_and_first_sync(inside_netns: str, datapath: Datapath) -> None:
    stats = ControlPlaneStats()
    server = start_metrics_server("[::1]:0", datapath, stats)
    try:
        assert get(server.url + "/healthz")[0::2] == (200, "ok\n")
        assert get(server.url + "/readyz")[0::2] == (503, "maps not adopted yet\n")
        stats.maps_adopted()
        assert get(server.url + "/readyz")[0::2] == (503, "no interface to attach to yet\n")
        stats.expect_interfaces({"pub0": "public"})
        assert get(server.url + "/readyz")[0::2] == (503, "programs not attached on pub0\n")
        datapath.attach_public("pub0")
        assert get(server.url + "/readyz")[0::2] == (503, "first sync with Docker not done yet\n")
        stats.resynced()
        assert get(server.url + "/readyz")[0::2] == (200, "ready\n")
        assert get(server.url + "/healthz")[0] == 200

        # Someone removes our filter: not ready any more, and the metrics say which interface.
        datapath.detach("pub0")
        assert get(server.url + "/readyz")[0::2] == (503, "programs not attached on pub0\n")
        status, content_type, body = get(server.url + "/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        assert 'v6nat_interface_attached{interface="pub0",role="public"} 0.0' in body
        assert "v6nat_ready 0.0" in body
    finally:
        server.shutdown()


def test_status_endpoint_and_rendering(inside_netns: str, datapath: Datapath) -> None:
    stats = ControlPlaneStats()
    stats.maps_adopted()
    stats.expect_interfaces({"pub0": "public"})
    stats.docker_connected(True)
    stats.event_handled("container_start")
    stats.observe_reconcile(0.02, write_errors=1)
    server = start_metrics_server("[::1]:0", datapath, stats)
    try:
        status = fetch_status(f"[::1]:{server.port}")
        code, content_type, body = get(server.url + "/status")
    finally:
        server.shutdown()
    assert (code, content_type) == (200, "application/json")
    assert json.loads(body)["control_plane"] == status["control_plane"]
    assert status["ready"] is False and status["ready_reason"] == "programs not attached on pub0"
    assert status["control_plane"]["docker_events"] == {"container_start": 1}
    assert status["control_plane"]["map_write_errors"] == 1
    assert status["interfaces"] == {"pub0": {"role": "public", "attached": False}}
    text = render_status(status)
    assert "ready: no, programs not attached on pub0" in text
    assert "pub0       public  NO" in text
    for reason in status["drops"]:
        assert reason in text


def test_unknown_path_is_404(inside_netns: str, datapath: Datapath) -> None:
    server = start_metrics_server("127.0.0.1:0", datapath, ControlPlaneStats())
    try:
        assert get(server.url + "/nope")[0] == 404
    finally:
        server.shutdown()


def test_port_in_use_and_absent_daemon_are_one_line_errors(inside_netns: str, datapath: Datapath) -> None:
    server = start_metrics_server("[::1]:0", datapath, ControlPlaneStats())
    try:
        with pytest.raises(V6natError, match=rf"^--metrics-listen \[::1\]:{server.port}: Address already in use$"):
            start_metrics_server(f"[::1]:{server.port}", datapath, ControlPlaneStats())
    finally:
        server.shutdown()
    with pytest.raises(V6natError, match=rf"^no v6nat daemon answering on \[::1\]:{server.port}: "):
        fetch_status(f"[::1]:{server.port}")


def test_non_loopback_listen_is_logged(inside_netns: str, datapath: Datapath, caplog: pytest.LogCaptureFixture) -> None:
    # 2001:db8::99 is on no interface of the namespace: the warning comes first, then the bind fails.
    with caplog.at_level(logging.WARNING, logger="v6nat_ebpf.observe.server"), pytest.raises(V6natError, match="Cannot assign requested address"):
        start_metrics_server("[2001:db8::99]:0", datapath, ControlPlaneStats())
    assert "non-loopback address [2001:db8::99]:0" in caplog.text
