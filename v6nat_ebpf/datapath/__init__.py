"""The kernel half of v6nat: loading bpf/, attaching to interfaces, typed map access.

The contract other modules code against is docs/datapath.md and the docstrings of
loader.py and maps.py; everything they name is importable from here. Imported on
first use (PEP 562), so that a reader of one map's module (`v6nat flows` imports
datapath.flowlist) does not load the loader, the control plane's model and the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_FROM = {
    "v6nat_ebpf.datapath.loader": ("DEFAULT_PIN_PATH", "PROGRAMS", "Datapath"),
    "v6nat_ebpf.datapath.maps": ("Ban", "BanKey", "ConntrackSummary", "DatapathConfig", "DnatKey", "DnatTarget",
                                 "Flow", "FlowTuple", "NetworkEntry", "PolicyKey", "SnatAllocations", "VethEntry"),
}
_MODULE_OF = {name: module for module, names in _FROM.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
