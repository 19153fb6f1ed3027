"""Loading: versioned pin directory, adoption of pinned maps after a restart,
and clear one-line errors instead of adopting what does not fit."""

from __future__ import annotations

import json
import os
import subprocess
from ipaddress import IPv6Address
from pathlib import Path
from typing import Iterator

import pytest

from v6nat_ebpf.datapath import Datapath, DatapathConfig, DnatKey, DnatTarget, hostlocal
from v6nat_ebpf.datapath.loader import program_names
from v6nat_ebpf.datapath.pins import layout_version
from v6nat_ebpf.errors import V6natError
from dp_packets import CLIENT, HOST, LO_IFINDEX, PUBLIC_INGRESS, addr, go, tcp

SMALL = DatapathConfig(conntrack_max=1024, dnat_max=64)
CURRENT = f"v{layout_version()}"


@pytest.fixture
def pin_path() -> Iterator[Path]:
    path = Path(f"/sys/fs/bpf/v6dp-loader-{os.getpid()}")
    yield path
    Datapath.cleanup(path)
    assert not path.exists()


def test_maps_survive_a_restart_and_are_adopted(pin_path: Path) -> None:
    key, target = DnatKey(6, None, 8080), DnatTarget(IPv6Address("fd00:1::2"), 80, 1)
    with Datapath.open(pin_path, SMALL) as first:
        first.dnat.put(key, target)
        first.host_addrs.put(addr(HOST), LO_IFINDEX)
        go(first, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40000, 8080))
    builds = [p.name for p in (pin_path / CURRENT).iterdir() if p.name.startswith("progs-")]
    assert sorted(p.name for p in (pin_path / CURRENT).iterdir()) == sorted([*first.specs, *builds])
    # Every TC program and (this kernel takes them) the socket hooks of host-local access.
    assert len(builds) == 1 and sorted(os.listdir(pin_path / CURRENT / builds[0])) == sorted(
        [*program_names(), *hostlocal.PROGRAMS])
    with Datapath.open(pin_path, SMALL) as second:
        assert second.dnat.items() == [(key, target)]
        assert second.mapping_stats()[1][0] == 1  # counters survive the restart
        assert len(second.flows()) == 1
    with Datapath.open_pinned(pin_path) as reader:  # status/metrics: no compiler involved
        assert reader.dnat.items() == [(key, target)]
        assert reader.config == SMALL
        fill = reader.map_fill()
        # The flow's two halves: not assured yet, so in ct_unassured (a quarter of conntrack's size).
        assert fill["ct_unassured"] == (2, 256) and fill["conntrack"] == (0, 1024)


def program_ids(pin_path: Path) -> dict[str, int]:
    """Pinned program name -> the kernel's id of that program (a new load gets a new id)."""
    [progs] = (pin_path / CURRENT).glob("progs-*")
    return {name: json.loads(subprocess.run(["bpftool", "-j", "prog", "show", "pinned", str(progs / name)],
                                            capture_output=True, text=True, check=True).stdout)["id"]
            for name in program_names()}


def test_a_restart_over_matching_pins_compiles_nothing(pin_path: Path) -> None:
    Datapath.open(pin_path, SMALL).close()
    loaded = program_ids(pin_path)
    with Datapath.open(pin_path, SMALL) as again:
        assert program_ids(pin_path) == loaded  # the same programs, adopted: nothing compiled or loaded
        go(again, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40000, 8080))  # and they run


def test_pins_of_another_build_are_rebuilt_and_the_maps_kept(pin_path: Path) -> None:
    key, target = DnatKey(6, None, 8080), DnatTarget(IPv6Address("fd00:1::2"), 80, 1)
    with Datapath.open(pin_path, SMALL) as first:
        first.dnat.put(key, target)
    [progs] = (pin_path / CURRENT).glob("progs-*")
    old = progs.rename(progs.with_name("progs-0123456789abcdef"))  # as if built from other sources
    old_ids = program_ids(pin_path)
    with Datapath.open(pin_path, SMALL) as rebuilt:
        assert rebuilt.dnat.items() == [(key, target)]
        assert not old.exists() and set(program_ids(pin_path).values()).isdisjoint(old_ids.values())


def test_a_pinned_map_of_another_shape_is_refused(pin_path: Path) -> None:
    (pin_path / CURRENT).mkdir(parents=True)
    subprocess.run(["bpftool", "map", "create", str(pin_path / CURRENT / "dnat"), "type", "hash", "key", "20",
                    "value", "8", "entries", "64", "name", "dnat"], check=True)
    with pytest.raises(V6natError, match=r"pinned map .*dnat is hash key 20 value 8 .*expected hash key 20 value 28"):
        Datapath.open(pin_path, SMALL)


def test_a_capacity_change_is_refused_not_silently_ignored(pin_path: Path) -> None:
    Datapath.open(pin_path, SMALL).close()
    with pytest.raises(V6natError, match="conntrack is lru_hash .*entries 1024.*entries 2048"):
        Datapath.open(pin_path, DatapathConfig(conntrack_max=2048, dnat_max=64))


def test_another_layout_version_is_refused_and_cleanup_removes_it(pin_path: Path) -> None:
    (pin_path / "v0").mkdir(parents=True)
    with pytest.raises(V6natError, match=f"holds maps of layout v0, this v6nat uses {CURRENT}: run `v6nat cleanup"):
        Datapath.open(pin_path, SMALL)
    assert "pins" in Datapath.cleanup(pin_path)[0]
    assert not pin_path.exists()


def test_pin_path_off_bpffs_is_refused() -> None:
    with pytest.raises(V6natError, match="is not on a bpf filesystem"):
        Datapath.open("/tmp/v6dp-not-bpffs", SMALL)


def test_open_pinned_without_a_datapath_says_so(pin_path: Path) -> None:
    with pytest.raises(V6natError, match="no datapath pinned"):
        Datapath.open_pinned(pin_path)


def test_bad_config_is_a_clear_error() -> None:
    with pytest.raises(V6natError, match="bad SNAT port range 70000-1"):
        DatapathConfig(snat_port_min=70000, snat_port_max=1)
