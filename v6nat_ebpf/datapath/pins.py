"""Where the datapath's maps are pinned, and the checks before a process adopts or reads them.

Maps are pinned under <pin_path>/v<LAYOUT_VERSION>/ (see loader.py). bcc reuses a pinned map without
any check, so every pin is checked (type, key size, value size, max entries, flags) against layout.py
first. Imports the standard library, errors and datapath.{bpfsys,layout}: readers of the maps (`v6nat
flows`) open them without the loader's imports.
"""

from __future__ import annotations

import ctypes
import os
import re
from pathlib import Path

from v6nat_ebpf.datapath import bpfsys, layout
from v6nat_ebpf.errors import V6natError


def layout_version() -> int:
    return layout.header().const("V6NAT_LAYOUT_VERSION")


def pin_dir(pin_path: str | Path) -> Path:
    return Path(pin_path) / f"v{layout_version()}"


def check_pin_path(pin_path: Path) -> None:
    """The pin path must be on a bpffs and hold no other layout version."""
    if not any(pin_path == m or m in pin_path.parents for m in bpfsys.mounts_of_type("bpf")):
        raise V6natError(f"pin path {pin_path} is not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)")
    if not pin_path.is_dir():
        return
    current = f"v{layout_version()}"
    for entry in sorted(pin_path.iterdir()):
        if re.fullmatch(r"v\d+", entry.name) and entry.name != current:
            raise V6natError(
                f"{pin_path} holds maps of layout {entry.name}, this v6nat uses {current}: "
                f"run `v6nat cleanup --pin-path {pin_path}` first"
            )


def check_pinned_maps(pins: Path, specs: dict[str, layout.MapSpec]) -> None:
    """Refuse pinned maps whose type or sizes differ from what we compile."""
    for spec in specs.values():
        path = pins / spec.name
        if not path.exists():
            continue
        fd = bpfsys.obj_get(str(path))
        try:
            info = bpfsys.map_info(fd)
        finally:
            os.close(fd)
        want = bpfsys.MapInfo(spec.type, ctypes.sizeof(spec.key), ctypes.sizeof(spec.value),
                              spec.max_entries, spec.flags)
        if info != want:
            raise V6natError(
                f"pinned map {path} is {info.type_name} key {info.key_size} value {info.value_size} "
                f"entries {info.max_entries} flags {info.flags:#x}, expected {want.type_name} key "
                f"{want.key_size} value {want.value_size} entries {want.max_entries} flags {want.flags:#x}: "
                f"run `v6nat cleanup --pin-path {pins.parent}` (drops its flows)"
            )


def pinned_specs(pin_path: str | Path) -> tuple[Path, dict[str, layout.MapSpec]]:
    """The directory of the maps pinned under `pin_path` and their specs (with the capacities they were
    pinned with), after checking them all; V6natError when none are pinned or one does not match."""
    pin_path = Path(pin_path)
    check_pin_path(pin_path)
    pins = pin_dir(pin_path)
    if not (pins / "conntrack").exists():
        raise V6natError(f"no datapath pinned at {pins}: is `v6nat run` running with this --pin-path?")
    info = bpfsys.map_info(fd := bpfsys.obj_get(str(pins / "conntrack")))
    os.close(fd)
    dnat_fd = bpfsys.obj_get(str(pins / "dnat"))
    dnat_max = bpfsys.map_info(dnat_fd).max_entries
    os.close(dnat_fd)
    specs = layout.map_specs(info.max_entries, dnat_max)
    check_pinned_maps(pins, specs)
    return pins, specs


def open_maps(pins: Path, specs: dict[str, layout.MapSpec]) -> dict[str, bpfsys.BpfMap]:
    """An fd for each map of `specs` pinned in `pins` (BpfMap.close closes it)."""
    maps = {}
    for spec in specs.values():
        fd = bpfsys.obj_get(str(pins / spec.name))
        maps[spec.name] = bpfsys.BpfMap(fd, ctypes.sizeof(spec.key), ctypes.sizeof(spec.value), spec.percpu)
    return maps
