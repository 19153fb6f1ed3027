"""The lab wing: everything tests, the demo and the benchmarks need, and nothing the daemon needs.

    common.py   state paths, `LabConfig`, `LabError`, the subprocess runner
    world.py    `Lab`: namespaces, links, addresses, containers, peer probes, SIGTERM handling
    dockerd.py  the lab's private dockerd
    image.py    the offline busybox image
    sweep.py    removing what a lab (or a killed run) left behind
    daemon.py   `LabDaemon`: `v6nat run` as a process in a lab's host netns
    demo.py     `v6nat demo`
    cli.py      `v6nat lab cleanup`
    testrun.py  BPF_PROG_TEST_RUN on scapy packets (imports scapy)
    datapath.py the test-only handles on a loaded `Datapath` (another netns, emptied maps)

Nothing on the daemon's path (commands.run, daemon, reconciler, the sources, datapath/, observe/)
imports this package; tests/test_import_rules.py checks it. The names below are the lab's
public face, re-exported so that `from v6nat_ebpf.lab import Lab` works. They load on first use
(PEP 562): `v6nat` registers the lab's commands for every command, `v6nat run` included, and
world.py brings the Docker SDK (about 15 MB the daemon would carry for nothing).
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULE_OF = {
    **dict.fromkeys(("BPFFS", "PIN_PREFIX", "LabConfig", "LabError", "PEER_ECHO_COMMAND", "PEER_ECHO_PORT"),
                    "common"),
    **dict.fromkeys(("Leftover", "leftovers_of", "live_labs", "sweep_leftovers"), "sweep"),
    **dict.fromkeys(("CLIENT_IFACE", "PUBLIC_IFACE", "ROUTER_CLIENT_IFACE", "ROUTER_HOST_IFACE", "Lab", "PeerProbe"),
                    "world"),
}


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)


__all__ = [
    "BPFFS",
    "CLIENT_IFACE",
    "PEER_ECHO_COMMAND",
    "PEER_ECHO_PORT",
    "PIN_PREFIX",
    "PUBLIC_IFACE",
    "ROUTER_CLIENT_IFACE",
    "ROUTER_HOST_IFACE",
    "Lab",
    "LabConfig",
    "LabError",
    "Leftover",
    "PeerProbe",
    "leftovers_of",
    "live_labs",
    "sweep_leftovers",
]
