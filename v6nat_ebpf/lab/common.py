"""What every module of the lab shares: where a lab keeps its state, its error, its settings, one runner.

Imports: stdlib and v6nat_ebpf.errors only.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from v6nat_ebpf.errors import V6natError

LAB_PREFIX = "v6l-"
STATE_ROOT = Path("/run/v6nat-lab")
BPFFS = Path("/sys/fs/bpf")
PIN_PREFIX = "v6nat-lab-"
CGROUP_ROOT = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/run/netns")
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class LabError(V6natError):
    """The lab could not be built or torn down."""


@dataclass(frozen=True)
class LabConfig:
    """What a lab should look like; the Docker flags are passed to its dockerd as given."""

    userland_proxy: bool = False
    ip6tables: bool = False  # Docker's own IPv6 NAT: adds --experimental --ip6tables
    iptables: bool = True
    router_mtu: int | None = None  # a router netns between client and host, this MTU toward the host
    start_docker: bool = True
    docker_start_timeout_s: float = 60.0


def run(argv: Sequence[str], timeout: float = 30, check: bool = True,
         input: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout:g} s: {' '.join(argv)}") from exc
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


# A server that answers every TCP connection with the address it sees as the
# peer, then closes: the probe of "whose address reaches the container".
PEER_ECHO_COMMAND = ["socat", "TCP6-LISTEN:80,fork,reuseaddr", "SYSTEM:echo $SOCAT_PEERADDR"]
PEER_ECHO_PORT = 80
