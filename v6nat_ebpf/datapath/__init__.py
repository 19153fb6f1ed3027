"""The kernel half of v6nat: loading bpf/, attaching to interfaces, typed map access.

The contract other modules code against is docs/datapath.md and the docstrings of
loader.py and maps.py; everything they name is importable from here.
"""

from v6nat_ebpf.datapath.loader import DEFAULT_PIN_PATH, PROGRAMS, Datapath
from v6nat_ebpf.datapath.maps import (
    Ban,
    BanKey,
    ConntrackSummary,
    DatapathConfig,
    DnatKey,
    DnatTarget,
    Flow,
    FlowTuple,
    NetworkEntry,
    PolicyKey,
    SnatAllocations,
    VethEntry,
)

__all__ = [
    "Ban",
    "BanKey",
    "DEFAULT_PIN_PATH",
    "PROGRAMS",
    "ConntrackSummary",
    "Datapath",
    "DatapathConfig",
    "DnatKey",
    "DnatTarget",
    "Flow",
    "FlowTuple",
    "NetworkEntry",
    "PolicyKey",
    "SnatAllocations",
    "VethEntry",
]
