"""Defaults that several layers share, each written once (protocol names live in model.py).

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

# Conntrack capacity in halves (two per flow; bpf/v6nat.h V6NAT_CT_MAX), and the bounds `--conntrack-max` accepts.
CONNTRACK_MAX = 262144
CONNTRACK_MAX_FLOOR = 64
CONNTRACK_MAX_CEILING = 1 << 24
