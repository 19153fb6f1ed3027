"""A `[::1]` binding (Docker 28's `-p [::1]:8081:80`) is for the host's own processes: its dnat entry (host
address ::1) serves the socket hooks (host-local access) and never a packet, even one forged to ::1."""

from __future__ import annotations

from v6nat_ebpf.datapath import Datapath, DnatKey, DnatTarget
from dp_packets import C1, CLIENT, HOST, PUBLIC_INGRESS, addr, assert_untouched, go, tcp, udp


def test_a_packet_to_a_host_only_binding_is_never_translated(dp: Datapath) -> None:
    for proto in (6, 17):
        dp.dnat.put(DnatKey(proto, addr("::1"), 8081), DnatTarget(addr(C1), 80, 9))
    for make in (tcp, udp):
        for pkt in (make(CLIENT, "::1", 40000, 8081), make(CLIENT, HOST, 40000, 8081)):  # forged to ::1, and honest
            assert_untouched(go(dp, PUBLIC_INGRESS, pkt), pkt)
    assert dp.flows() == [] and dp.counters()["dnat"] == 0
