"""The container image and the compose drop-in, end to end against the lab's dockerd.

`make image` (scripts/image; the tar is cached by its inputs) imports the image into the lab's dockerd;
Debian's docker-compose brings up contrib/compose/docker-compose.yml, the file that ships, with an override
that points it at the lab: the lab's Docker socket, its pin path, its public interface, and a cgroup of this
module's own for host-local access (never where this machine's processes live). v6nat then runs as a
container in the lab's host netns, with exactly the capabilities of the compose file.

Everything goes at the end, also on failure: `docker-compose down`, `v6nat cleanup` in the image, the
module's cgroup, and the lab (its containers, dockerd with the imported image, pins and namespaces).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from e2e_support import LIVE_CLIENT, effective_caps, eventually, tcp_echo_server

from v6nat_ebpf.lab import Lab
from v6nat_ebpf.lab.cgroup import lab_cgroup

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "contrib" / "compose" / "docker-compose.yml"
SERVICE = "ipv6nat"
IMAGE = "v6nat:latest"
METRICS = "http://[::1]:9661"  # the image's default listener, in the lab's host netns
CAP_BITS = {"NET_ADMIN": 12, "SYS_ADMIN": 21}
WEB_PORT, ECHO_PORT = 8080, 8090
IMAGE_BUILD_TIMEOUT_S = 1800  # a cold build downloads Debian's packages: minutes


def service() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"][SERVICE]


def container_path(host_path: str) -> str:
    """Where the compose file mounts a host path below /sys/fs/bpf or /sys/fs/cgroup: under /host."""
    return "/host" + host_path


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": "/root",
                               **(env or {})})


class Compose:
    """docker-compose of the shipped file plus the lab's override, as project `lab.name`, against the lab's dockerd."""

    def __init__(self, lab: Lab, cgroup: Path) -> None:
        self.lab = lab
        self.environment = {"V6NAT_PUBLIC_IFACE": lab.public_iface, "V6NAT_PIN_PATH": container_path(lab.pin_path),
                            "V6NAT_LOG_LEVEL": "debug"}
        # The lab's dockerd takes its settings as flags, which a container cannot see: the same in a daemon.json.
        etc_docker = lab.state_dir / "etc-docker"
        etc_docker.mkdir()
        (etc_docker / "daemon.json").write_text(json.dumps({"userland-proxy": lab.config.userland_proxy,
                                                            "ip6tables": lab.config.ip6tables}))
        self.volumes = {"/var/run/docker.sock": f"{lab.dockerd.sock}:/var/run/docker.sock:ro",
                        "/etc/docker": f"{etc_docker}:/etc/docker:ro",
                        "/host/sys/fs/cgroup": f"{cgroup}:{container_path('/sys/fs/cgroup')}:ro"}
        self.override = lab.state_dir / "compose.override.yml"
        # compose merges volumes by their path in the container, environment by name.
        self.override.write_text(yaml.safe_dump({"services": {SERVICE: {
            "environment": self.environment, "volumes": list(self.volumes.values())}}}))

    def __call__(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        result = run(["docker-compose", "--no-ansi", "-p", self.lab.name, "-f", str(COMPOSE_FILE),
                      "-f", str(self.override), *args], env={"DOCKER_HOST": self.lab.docker_url}, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def container(self) -> Any:
        [container] = self.lab.docker.containers.list(filters={
            "label": [f"com.docker.compose.project={self.lab.name}", f"com.docker.compose.service={SERVICE}"]})
        return container

    def volumes_for_sdk(self, without: tuple[str, ...] = ()) -> dict[str, dict[str, str]]:
        """The service's mounts (compose file, then override) as the Docker SDK takes them, minus the
        container paths in `without`."""
        merged: dict[str, str] = {}
        for spec in [*service()["volumes"], *self.volumes.values()]:
            merged[spec.split(":")[1]] = spec
        sdk = {}
        for target, spec in merged.items():
            if target not in without:
                source, _, mode = (spec.split(":") + ["rw"])[:3]
                sdk[source] = {"bind": target, "mode": mode}
        return sdk

    def environment_for_sdk(self) -> dict[str, str]:
        return {**{k: str(v) for k, v in service()["environment"].items()}, **self.environment}


def ready(lab: Lab) -> bool:
    return lab.exec(lab.host_ns, ["curl", "-s", "-m", "2", "-o", "/dev/null", "-w", "%{http_code}",
                                  f"{METRICS}/readyz"], check=False).stdout.strip() == "200"


def answers(lab: Lab, port: int) -> bool:
    return lab.probe_peer(lab.host_addr, port, timeout_s=1.5).peer == lab.client_addr


def one_off(lab: Lab, compose: Compose, cap_add: list[str], without: tuple[str, ...] = (),
            command: list[str] | None = None, pin_path: str | None = None) -> tuple[int, str]:
    """The image run once as the service would be, with `cap_add` and without the mounts at `without`:
    (exit status, output)."""
    environment = compose.environment_for_sdk()
    if pin_path:
        environment["V6NAT_PIN_PATH"] = pin_path
    container = lab.docker.containers.run(
        IMAGE, command, detach=True, network_mode="host", cap_drop=["ALL"], cap_add=cap_add,
        volumes=compose.volumes_for_sdk(without), environment=environment)
    try:
        status = container.wait(timeout=180)["StatusCode"]
        return status, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


@pytest.fixture(scope="module")
def image(lab: Lab) -> str:
    started = time.monotonic()
    result = run([str(ROOT / "scripts" / "image")], env={"DOCKER_HOST": lab.docker_url,
                                                         **{k: v for k, v in os.environ.items() if k == "V6NAT_VAGRANT_CACHE"}},
                 timeout=IMAGE_BUILD_TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    print(f"\nMEASURED make image (into the lab's dockerd): {time.monotonic() - started:.0f} s; "
          f"{result.stdout.strip().splitlines()[-2]}")
    return IMAGE


@pytest.fixture(scope="module")
def compose(lab: Lab, image: str) -> Iterator[Compose]:
    with lab_cgroup(lab, "compose-host-local") as cgroup:
        compose = Compose(lab, cgroup)
        try:
            yield compose
        finally:
            # The service's log, for a failure's report (pytest shows it with the last test's output).
            sys.stderr.write(compose("logs", "--no-color", "--tail", "60", check=False).stdout)
            compose("down", "--timeout", "20", check=False)
            cleanup = compose("run", "--rm", SERVICE, "cleanup", check=False)
            if cleanup.returncode != 0:
                sys.stderr.write(f"v6nat cleanup in the image failed: {cleanup.stderr}\n")


@pytest.fixture(scope="module")
def served(lab: Lab, compose: Compose) -> None:
    ula = lab.create_network("ula", "fd00:1c::/64")
    lab.run_container("web", ula, tcp_echo_server(), ports={"80/tcp": WEB_PORT})
    lab.run_container("echo", ula, ["socat", "TCP6-LISTEN:80,fork,reuseaddr", "EXEC:cat"], ports={"80/tcp": ECHO_PORT})


def test_without_kernel_headers_check_says_so_and_run_exits_with_one_line(lab: Lab, compose: Compose) -> None:
    headers = ("/lib/modules", "/usr/src")
    status, out = one_off(lab, compose, service()["cap_add"], without=headers, command=["check"])
    assert status == 1, out
    assert any(line.startswith("fail") and "kernel headers" in line and "mount the host's /lib/modules" in line
               for line in out.splitlines()), out
    # No pins of this build yet: the daemon must compile, and cannot.
    pins = f"{lab.pin_path}/no-headers"
    status, out = one_off(lab, compose, service()["cap_add"], without=headers, pin_path=container_path(pins))
    errors = [line for line in out.splitlines() if "error" in line.lower()]
    assert status != 0 and "Traceback" not in out, out
    assert errors[-1].startswith("v6nat: error: kernel headers:") and "missing" in errors[-1], out
    status, out = one_off(lab, compose, service()["cap_add"], command=["cleanup"], pin_path=container_path(pins))
    assert status == 0, out


def test_host_local_without_the_cgroup_mount_exits_with_one_line(lab: Lab, compose: Compose) -> None:
    status, out = one_off(lab, compose, service()["cap_add"], without=("/host/sys/fs/cgroup",))
    assert status != 0 and "Traceback" not in out, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("v6nat: error: cgroup path /host/sys/fs/cgroup is not inside a cgroup v2 hierarchy"), out


@pytest.mark.parametrize("missing", service()["cap_add"])
def test_one_capability_less_fails_with_one_line(lab: Lab, compose: Compose, missing: str) -> None:
    caps = [c for c in service()["cap_add"] if c != missing]
    status, out = one_off(lab, compose, caps)
    assert status != 0 and "Traceback" not in out, out
    assert out.strip().splitlines()[-1].startswith("v6nat: error: capabilities: missing"), out


def test_the_service_serves_with_exactly_its_capabilities(lab: Lab, compose: Compose, served: None) -> None:
    assert service()["cap_drop"] == ["ALL"] and set(service()["cap_add"]) <= set(CAP_BITS)
    compose("up", "-d", SERVICE)
    eventually(lambda: ready(lab), timeout=120, what="v6nat in its container is ready")
    pid = compose.container().attrs["State"]["Pid"]
    assert effective_caps(pid) == sum(1 << CAP_BITS[c] for c in service()["cap_add"])
    eventually(lambda: answers(lab, WEB_PORT), what="a published port answers with the client's address")
    # Host-local access hooks sit on the module's own cgroup, mounted where the compose file mounts cgroup v2.
    shown = run(["bpftool", "-j", "cgroup", "show", compose.volumes["/host/sys/fs/cgroup"].split(":")[0]])
    assert {e["attach_type"] for e in json.loads(shown.stdout.strip() or "[]")} >= {"cgroup_inet6_connect"}, shown


def test_restarting_the_service_drops_no_connection(lab: Lab, compose: Compose, served: None) -> None:
    live = lab.popen(lab.client_ns, [sys.executable, "-c", LIVE_CLIENT, str(lab.host_addr), str(ECHO_PORT),
                                     str(lab.client_addr)],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert live.stdout.readline().strip() == "echo"
    started_before = compose.container().attrs["State"]["StartedAt"]
    compose("restart", SERVICE)
    assert compose.container().attrs["State"]["StartedAt"] != started_before
    eventually(lambda: ready(lab), timeout=60, what="the restarted container is ready")
    logs = compose.container().logs().decode(errors="replace")
    assert "datapath adopted" in logs, logs[-2000:]
    live.stdin.write("\n")
    live.stdin.flush()
    answer = live.stdout.readline().strip()
    # the connection opened before the restart lives on
    assert answer == "echo", compose("logs", "--no-color", "--tail", "80", check=False).stdout
    live.stdin.close()
    live.wait(10)
    assert answers(lab, WEB_PORT)  # and new ones are answered


def test_down_then_cleanup_in_the_image_leaves_nothing(lab: Lab, compose: Compose, served: None) -> None:
    compose("down", "--timeout", "20")
    assert answers(lab, WEB_PORT)  # stopping v6nat leaves the datapath serving
    result = compose("run", "--rm", SERVICE, "cleanup")
    assert "removed" in result.stdout, result.stdout + result.stderr
    assert not answers(lab, WEB_PORT)
    assert not os.path.exists(lab.pin_path) or not any(os.scandir(lab.pin_path))
    bridges = [n.attrs["Options"].get("com.docker.network.bridge.name") or "br-" + n.id[:12]
               for n in lab.docker.networks.list(names=["ula"])]
    for iface in [lab.public_iface, *bridges]:
        for direction in ("ingress", "egress"):
            shown = lab.exec(lab.host_ns, ["tc", "filter", "show", "dev", iface, direction], check=False).stdout
            assert "v6nat" not in shown, shown
    shown = run(["bpftool", "-j", "cgroup", "show", compose.volumes["/host/sys/fs/cgroup"].split(":")[0]])
    assert json.loads(shown.stdout.strip() or "[]") == [], shown
