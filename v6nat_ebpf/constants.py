"""Facts that several layers share, each written once: defaults, protocol names.

Imports nothing (not even the rest of v6nat_ebpf), so every module may import it.
"""

from __future__ import annotations

DEFAULT_PIN_PATH = "/sys/fs/bpf/v6nat"
DEFAULT_METRICS_LISTEN = "[::1]:9661"
DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"  # when neither --docker-host nor $DOCKER_HOST says otherwise

# The SNAT source port range: by default the top of the port space, above Linux's ephemeral range
# (ip_local_port_range ends at 60999); a range given by hand may start anywhere from SNAT_PORT_FLOOR.
SNAT_PORT_MIN = 61000
SNAT_PORT_MAX = 65535
SNAT_PORT_FLOOR = 1024

# IP protocol numbers and the names v6nat writes them with (metrics labels, status, flows, Docker port specs).
PROTOCOL_NAMES = {6: "tcp", 17: "udp", 58: "icmpv6"}
PROTOCOL_NUMBERS = {name: number for number, name in PROTOCOL_NAMES.items()}


def protocol_name(proto: int) -> str:
    """IP protocol number -> "tcp", "udp", "icmpv6" (or the number as text for any other)."""
    return PROTOCOL_NAMES.get(proto, str(proto))
