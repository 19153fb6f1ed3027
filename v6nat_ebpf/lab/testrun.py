"""Run a loaded TC program on one packet with BPF_PROG_TEST_RUN.

Used by tests/datapath, tests/metrics and bench/ (never by the daemon: scapy is a test extra): the packet is a scapy Ether (or raw bytes),
the result is the program's verdict and the packet it left, as scapy. The skb
runs on the loopback device of the caller's netns (ifindex 1) unless another
ifindex of that netns is given. Imports scapy, bpfsys.
"""

from __future__ import annotations

import ctypes as ct
from dataclasses import dataclass

from scapy.layers.l2 import Ether
from scapy.packet import Packet

from v6nat_ebpf.datapath.bpfsys import prog_test_run

TC_ACT_UNSPEC = -1
TC_ACT_OK = 0
TC_ACT_SHOT = 2
TC_ACT_REDIRECT = 7


class SkBuffCtx(ct.Structure):
    """struct __sk_buff up to the fields BPF_PROG_TEST_RUN accepts as input."""

    _fields_ = [
        ("len", ct.c_uint32), ("pkt_type", ct.c_uint32), ("mark", ct.c_uint32),
        ("queue_mapping", ct.c_uint32), ("protocol", ct.c_uint32), ("vlan_present", ct.c_uint32),
        ("vlan_tci", ct.c_uint32), ("vlan_proto", ct.c_uint32), ("priority", ct.c_uint32),
        ("ingress_ifindex", ct.c_uint32), ("ifindex", ct.c_uint32), ("tc_index", ct.c_uint32),
        ("cb", ct.c_uint32 * 5), ("hash", ct.c_uint32), ("tc_classid", ct.c_uint32),
        ("data", ct.c_uint32), ("data_end", ct.c_uint32), ("napi_id", ct.c_uint32),
        ("family", ct.c_uint32), ("remote_ip4", ct.c_uint32), ("local_ip4", ct.c_uint32),
        ("remote_ip6", ct.c_uint32 * 4), ("local_ip6", ct.c_uint32 * 4),
        ("remote_port", ct.c_uint32), ("local_port", ct.c_uint32), ("data_meta", ct.c_uint32),
        ("flow_keys", ct.c_uint64), ("tstamp", ct.c_uint64), ("wire_len", ct.c_uint32),
        ("gso_segs", ct.c_uint32), ("sk", ct.c_uint64), ("gso_size", ct.c_uint32),
        ("tstamp_type", ct.c_uint8), ("_pad", ct.c_uint8 * 3), ("hwtstamp", ct.c_uint64),
    ]


@dataclass(frozen=True)
class RunResult:
    verdict: int
    raw: bytes
    duration_ns: int  # average per run, as the kernel measured it

    @property
    def packet(self) -> Ether:
        return Ether(self.raw)


def run(prog_fd: int, packet: Packet | bytes, ifindex: int = 1, repeat: int = 1) -> RunResult:
    """Run the program `repeat` times on `packet` (each run sees what the
    previous one left: check outputs with repeat=1)."""
    data = bytes(packet)
    ctx = None
    if ifindex != 1:
        c = SkBuffCtx()
        c.ifindex = ifindex
        ctx = bytes(c)
    result = prog_test_run(prog_fd, data, ctx, repeat)
    return RunResult(result.retval, result.data, result.duration_ns)
