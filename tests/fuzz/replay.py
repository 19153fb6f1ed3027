"""Replay one packet (a reproducer from a fuzz report) through a program of a
freshly built fuzz world and show input and output with scapy, checksums
verified by scapy (which uses a routing header's final destination):

    python -m tests.fuzz.replay v6nat_public_ingress 0200... [rules [interface]]

The interface is the one the report names (a bridge brN, a port vc1...; by
default the packet's own, world.default_iface).

Base flows are created as in a campaign (a SNAT flow whose port had to be
chosen at random gets another port each time: replays of such flows differ)."""

from __future__ import annotations

import os
import sys

import scapy.layers.inet  # noqa: F401  (binds TCP, UDP into IPv6)
import scapy.layers.inet6  # noqa: F401
from scapy.layers.l2 import Ether

from v6nat_ebpf.datapath.bpfsys import prog_test_run
from v6nat_ebpf.lab.testrun import SkBuffCtx

from . import world as W
from .campaign import World
from .model import DEFAULT_RULES, Model


def scapy_checksums_ok(raw: bytes) -> str:
    """The outer L4 checksum, checked by scapy's in6_chksum (which takes the
    final destination of a routing header with segments left)."""
    from scapy.layers.inet import TCP, UDP
    from scapy.layers.inet6 import IPv6, in6_chksum, _ICMPv6

    p = Ether(raw)
    for cls, proto in ((TCP, 6), (UDP, 17), (_ICMPv6, 58)):
        layer = p.getlayer(cls)
        if layer is None or p.getlayer(IPv6) is None:
            continue
        blank = layer.copy()
        blank.remove_payload()
        data = bytes(layer)
        at = {6: 16, 17: 6, 58: 2}[proto]
        zeroed = data[:at] + b"\0\0" + data[at + 2:]
        want = in6_chksum(proto, layer.underlayer, zeroed)
        have = int.from_bytes(data[at:at + 2], "big")
        return f"{layer.name} checksum {have:#06x} " + ("(valid)" if want == have else f"(wrong: valid is {want:#06x})")
    return "no L4 checksum"


def main(argv: list[str]) -> int:
    prog, hexdata = argv[0], argv[1]
    rules = argv[2] if len(argv) > 2 else DEFAULT_RULES
    inp = bytes.fromhex(hexdata)
    W.enter_private_netns()
    socks = W.open_host_sockets()
    world = World(f"replay-{os.getpid()}", rules)
    try:
        iface = argv[3] if len(argv) > 3 else W.default_iface(prog, inp)
        c = SkBuffCtx()
        c.ifindex = W.IFINDEX[iface]
        res = prog_test_run(world.fds[prog], inp, bytes(c))
        v = Model(world.rules, world.flows).judge(prog, iface, inp, res.data, res.retval)
        print(f"{prog} on {iface}: verdict {res.retval}, model: {v.outcome} {v.violations}")
        print("in: ", scapy_checksums_ok(inp))
        Ether(inp).show2()
        print("out:", scapy_checksums_ok(res.data))
        Ether(res.data).show2()
    finally:
        world.close()
        for s in socks:
            s.close()
    return 1 if v.violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
