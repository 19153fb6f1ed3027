"""Attaching with tc: clsact + direct-action filters at our pref/handle,
atomic replace, detach and cleanup that never disturb other tools' filters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
from bcc import BPF
from pyroute2 import NetNS

from v6nat_ebpf.datapath import Datapath
from v6nat_ebpf.datapath import tc as tcmod
from v6nat_ebpf.errors import V6natError
from v6nat_ebpf.lab.datapath import in_netns
from netns_world import namespaces, sh


@pytest.fixture
def ns() -> Iterator[str]:
    with namespaces("tc") as (name,):
        sh("ip", "link", "add", "pub0", "type", "veth", "peer", "name", "br0", netns=name)
        yield name


@pytest.fixture(scope="module")
def foreign_prog() -> Iterator[int]:
    b = BPF(text=b"int othertool(struct __sk_buff *skb) { return -1; }")
    yield b.load_func(b"othertool", BPF.SCHED_CLS).fd
    b.cleanup()


def filters(ns: str, dev: str, direction: str) -> list[dict]:
    out = json.loads(sh("tc", "-j", "filter", "show", "dev", dev, direction, netns=ns).stdout or "[]")
    return [f for f in out if "options" in f]


def add_foreign(ns: str, fd: int, dev: str, direction: str, pref: int) -> None:
    """Another tool's filter, written with pyroute2 (not through v6nat's own netlink code)."""
    with NetNS(ns) as nl:
        idx = nl.link_lookup(ifname=dev)[0]
        try:
            nl.tc("add", "clsact", idx)
        except Exception:
            pass
        nl.tc("add-filter", "bpf", idx, handle=1, fd=fd, name="othertool", parent=tcmod.PARENTS[direction],
              prio=pref, protocol=0x0003, direct_action=True)


def test_attach_replace_detach_keep_other_filters(loaded: Datapath, ns: str, foreign_prog: int) -> None:
    dp = in_netns(loaded, ns)
    add_foreign(ns, foreign_prog, "pub0", "ingress", 1)
    add_foreign(ns, foreign_prog, "pub0", "egress", 20000)

    dp.attach_public("pub0")
    dp.attach_bridge("br0")
    assert dp.attached() == {"pub0": "public", "br0": "bridge"}
    ours = [f["options"]["bpf_name"] for f in filters(ns, "pub0", "ingress") + filters(ns, "pub0", "egress")]
    assert sorted(ours) == ["othertool", "othertool", "v6nat_public_egress", "v6nat_public_ingress"]
    first_id = [f for f in filters(ns, "pub0", "ingress") if f["pref"] == tcmod.PREF][0]["options"]["prog"]["id"]

    dp.attach_public("pub0")  # idempotent: replaced in place, still one of ours per hook
    assert [f["pref"] for f in filters(ns, "pub0", "ingress")] == [1, tcmod.PREF]
    assert [f["options"]["prog"]["id"] for f in filters(ns, "pub0", "ingress")][1] == first_id

    dp.detach("pub0")
    assert dp.attached() == {"br0": "bridge"}
    assert [f["options"]["bpf_name"] for f in filters(ns, "pub0", "ingress")] == ["othertool"]
    assert [f["options"]["bpf_name"] for f in filters(ns, "pub0", "egress")] == ["othertool"]


def test_replace_by_a_new_load_swaps_the_program_atomically(ns: str) -> None:
    pin_path = f"/sys/fs/bpf/v6dp-replace-{__import__('os').getpid()}"
    try:
        with Datapath.open(pin_path, netns=ns) as first:
            first.attach_public("pub0")
            old = filters(ns, "pub0", "ingress")[0]["options"]["prog"]["id"]
        # An upgraded daemon: its programs are of another build (here: the pinned ones renamed away).
        [progs] = Path(pin_path).glob("v*/progs-*")
        progs.rename(progs.with_name("progs-0123456789abcdef"))
        with Datapath.open(pin_path, netns=ns) as second:
            assert second.attached() == {"pub0": "public"}
            second.attach_public("pub0")
            [now] = filters(ns, "pub0", "ingress")
            assert now["options"]["prog"]["id"] != old
    finally:
        Datapath.cleanup(pin_path, netns=ns)
    assert filters(ns, "pub0", "ingress") == []


def test_our_preference_taken_by_another_tool_is_a_clear_error(loaded: Datapath, ns: str,
                                                                foreign_prog: int) -> None:
    dp = in_netns(loaded, ns)
    add_foreign(ns, foreign_prog, "pub0", "ingress", tcmod.PREF)
    with pytest.raises(V6natError, match="preference 9734 is taken"):
        dp.attach_public("pub0")
    assert [f["options"]["bpf_name"] for f in filters(ns, "pub0", "ingress")] == ["othertool"]


def test_unknown_interface_is_a_clear_error(loaded: Datapath, ns: str) -> None:
    dp = in_netns(loaded, ns)
    with pytest.raises(V6natError, match="no interface 'eth9'"):
        dp.attach_public("eth9")
