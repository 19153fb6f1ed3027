"""A lab's private dockerd: started in the lab's host netns, with its own state, config file and cgroup parent.

dockerd is started with `nsenter --net` (not `ip netns exec`, which remounts /sys and hides the
cgroup tree dockerd needs), with `--bridge=none --live-restore` and the Docker flags of the
`LabConfig`; its config file is an empty one of the lab's own, so the machine's
/etc/docker/daemon.json does not leak in.

Imports: stdlib, docker, lab.common and lab.image.
"""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path

import docker
import docker.errors

from v6nat_ebpf.lab.common import CONTAINER_PATH, NETNS_DIR, PIN_PREFIX, LabConfig, LabError
from v6nat_ebpf.lab.image import IMAGE, busybox_image_tar

log = logging.getLogger(__name__)


class Dockerd:
    """The dockerd of lab `lab_name`, serving on `<state_dir>/docker.sock` from netns `host_ns`."""

    def __init__(self, lab_name: str, state_dir: Path, host_ns: str, config: LabConfig) -> None:
        self.lab_name = lab_name
        self.state_dir = state_dir
        self.host_ns = host_ns
        self.config = config
        self.sock = state_dir / "docker.sock"
        self.url = f"unix://{self.sock}"
        self.pidfile = state_dir / "dockerd.pid"
        self._log = state_dir / "dockerd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        """A client of this dockerd (a new object after each restart)."""
        if self._client is None:
            raise LabError(f"lab {self.lab_name}: dockerd is not running")
        return self._client

    @property
    def has_client(self) -> bool:
        return self._client is not None

    def argv(self) -> list[str]:
        cfg = self.config
        argv = [
            "nsenter", f"--net={NETNS_DIR / self.host_ns}", "--",
            "dockerd",
            "--config-file", str(self.state_dir / "daemon.json"),
            "--data-root", str(self.state_dir / "data"),
            "--exec-root", str(self.state_dir / "exec"),
            "--pidfile", str(self.pidfile),
            "-H", self.url,
            "--bridge=none",
            "--live-restore",
            f"--iptables={str(cfg.iptables).lower()}",
            f"--userland-proxy={str(cfg.userland_proxy).lower()}",
            # A cgroup parent of our own lets the sweep find what a killed lab left.
            "--exec-opt", "native.cgroupdriver=cgroupfs",
            "--cgroup-parent", f"/{PIN_PREFIX}{self.lab_name}",
        ]
        if cfg.ip6tables:
            argv += ["--experimental", "--ip6tables"]
        return argv

    def start(self) -> None:
        """Start dockerd in the host netns and wait until it answers."""
        if self._proc is not None and self._proc.poll() is None:
            return
        (self.state_dir / "daemon.json").write_text("{}\n")
        env = {"PATH": CONTAINER_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
        with open(self._log, "ab") as out:
            self._proc = subprocess.Popen(
                self.argv(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True)
        deadline = time.monotonic() + self.config.docker_start_timeout_s
        while True:
            if self._proc.poll() is not None:
                raise LabError(f"lab {self.lab_name}: dockerd exited with {self._proc.returncode}\n"
                               f"{self.log_tail()}")
            if self.sock.exists():
                # The client asks for the API version as it is made: a socket file left by the previous
                # dockerd refuses that, like the ping, until the new one serves.
                try:
                    client = docker.DockerClient(base_url=self.url, timeout=120)
                except (docker.errors.DockerException, OSError):
                    client = None
                try:
                    if client is not None:
                        client.ping()
                        self._client = client
                        return
                except (docker.errors.APIError, docker.errors.DockerException, OSError):
                    client.close()
            if time.monotonic() > deadline:
                raise LabError(f"lab {self.lab_name}: dockerd did not answer within "
                               f"{self.config.docker_start_timeout_s:.0f} s\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 30) -> None:
        """Stop dockerd gracefully (containers keep running thanks to --live-restore)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("lab %s: dockerd ignored SIGTERM for %.0f s, killing it", self.lab_name, timeout)
            proc.kill()
            proc.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no dockerd log)"

    def import_image(self) -> None:
        self.client.api.import_image_from_data(
            busybox_image_tar(), repository=IMAGE, tag="latest",
            changes=[f"ENV PATH={CONTAINER_PATH}"])

    def remove_containers(self) -> None:
        try:
            for container in self.client.containers.list(all=True):
                container.remove(force=True)
        except (docker.errors.DockerException, OSError) as exc:
            log.warning("lab %s: could not remove containers through the API: %s", self.lab_name, exc)
