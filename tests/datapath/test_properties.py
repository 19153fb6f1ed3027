"""Property tests: random tuples and payloads through the real programs."""

from __future__ import annotations

from ipaddress import IPv6Address

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from v6nat_ebpf.datapath import Datapath, DnatKey, DnatTarget
from v6nat_ebpf.datapath.layout import RawCtKey
from v6nat_ebpf.lab.datapath import ct_delete_half, ct_halves
from dp_packets import (
    BRIDGE_INGRESS, C1, HOST, LO_IFINDEX, PUBLIC_EGRESS, PUBLIC_INGRESS, SHOT, UNSPEC, eth, fresh, go, ping, tcp,
    udp,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ports = st.integers(1, 65535)
payloads = st.binary(max_size=300)
protos = st.sampled_from(["tcp", "udp"])
outside = st.integers(1, 2**64 - 1).map(lambda n: str(IPv6Address("2001:db8:77::") + n))
containers = st.integers(2, 2**64 - 1).map(lambda n: str(IPv6Address("fd00:1::") + n))


def make(proto: str, src: str, dst: str, sport: int, dport: int, payload: bytes, flags: str = "S") -> bytes:
    if proto == "tcp":
        return bytes(tcp(src, dst, sport, dport, flags, payload))
    return bytes(udp(src, dst, sport, dport, payload))


def forget_flows(dp: Datapath) -> None:
    for kb in ct_halves(dp):
        ct_delete_half(dp, RawCtKey.from_buffer_copy(kb))


def tuple_of(raw: bytes) -> tuple[str, str, int, int]:
    ip = Ether(raw)[IPv6]
    return ip.src, ip.dst, ip.payload.sport, ip.payload.dport


@SETTINGS
@given(proto=protos, client=outside, cport=ports, hport=ports, tport=ports, payload=payloads)
def test_dnat_then_reply_gives_the_original_back(dp, proto, client, cport, hport, tport, payload) -> None:
    forget_flows(dp)
    dp.dnat.put(DnatKey(6 if proto == "tcp" else 17, None, hport), DnatTarget(IPv6Address(C1), tport, 1))
    r = go(dp, PUBLIC_INGRESS, make(proto, client, HOST, cport, hport, payload))
    assert r.verdict == UNSPEC and r.raw == fresh(r.packet)  # checksum valid
    assert tuple_of(r.raw) == (client, C1, cport, tport)
    back = go(dp, PUBLIC_EGRESS, make(proto, C1, client, tport, cport, payload, "SA"))
    assert back.verdict == UNSPEC and back.raw == fresh(back.packet)
    assert tuple_of(back.raw) == (HOST, client, hport, cport)


# Addresses anywhere in 2000::/3 and fc00::/7, not only the lab's prefixes: the checksum delta of an
# address rewrite depends on every word of both addresses.
any_global = st.integers(0, 2**125 - 1).map(lambda n: IPv6Address((1 << 125) | n))
any_ula = st.integers(0, 2**121 - 1).map(lambda n: IPv6Address((0x7E << 121) | n))


@SETTINGS
@given(proto=protos, host=any_global, target=any_ula, client=outside, cport=ports, hport=ports, tport=ports)
def test_dnat_round_trip_for_any_host_and_container_address(dp, proto, host, target, client, cport, hport,
                                                            tport) -> None:
    forget_flows(dp)
    key = DnatKey(6 if proto == "tcp" else 17, host, hport)
    dp.host_addrs.put(host, LO_IFINDEX)
    dp.dnat.put(key, DnatTarget(target, tport, 1))
    try:
        r = go(dp, PUBLIC_INGRESS, make(proto, client, str(host), cport, hport, b"x"))
        assert r.verdict == UNSPEC and r.raw == fresh(r.packet)  # checksum valid
        assert tuple_of(r.raw) == (client, str(target), cport, tport)
        back = go(dp, PUBLIC_EGRESS, make(proto, str(target), client, tport, cport, b"y", "SA"))
        assert back.verdict == UNSPEC and back.raw == fresh(back.packet)
        assert tuple_of(back.raw) == (str(host), client, hport, cport)
    finally:
        dp.dnat.delete(key)
        dp.host_addrs.delete(host)


@SETTINGS
@given(proto=protos, container=containers, sport=ports, remote=outside, rport=ports, payload=payloads)
def test_snat_then_reply_gives_the_original_back(dp, proto, container, sport, remote, rport, payload) -> None:
    forget_flows(dp)
    out = go(dp, PUBLIC_EGRESS, make(proto, container, remote, sport, rport, payload))
    assert out.verdict == UNSPEC and out.raw == fresh(out.packet)
    src, dst, nport, dport = tuple_of(out.raw)
    assert (src, dst, dport) == (HOST, remote, rport)
    back = go(dp, PUBLIC_INGRESS, make(proto, remote, HOST, rport, nport, payload, "SA"))
    assert back.verdict == UNSPEC and back.raw == fresh(back.packet)
    assert tuple_of(back.raw) == (remote, container, rport, sport)


@SETTINGS
@given(container=containers, ident=st.integers(0, 65535), remote=outside, payload=payloads)
def test_echo_then_reply_gives_the_original_back(dp, container, ident, remote, payload) -> None:
    forget_flows(dp)
    out = go(dp, PUBLIC_EGRESS, ping(container, remote, ident, payload=payload))
    assert out.raw == fresh(out.packet)
    nid = out.packet[IPv6].payload.id
    back = go(dp, PUBLIC_INGRESS, ping(remote, HOST, nid, reply=True, payload=payload))
    assert back.raw == fresh(back.packet)
    assert back.raw == fresh(ping(remote, container, ident, reply=True, payload=payload))


@SETTINGS
@given(src=outside, dst=outside, nh=st.integers(0, 255), payload=payloads,
       hook=st.sampled_from([PUBLIC_INGRESS, PUBLIC_EGRESS, BRIDGE_INGRESS]))
def test_packets_that_are_not_ours_are_unchanged(dp, src, dst, nh, payload, hook) -> None:
    dp.dnat.put(DnatKey(6, None, 80), DnatTarget(IPv6Address(C1), 80, 1))
    raw = bytes(eth(IPv6(src=src, dst=dst, nh=nh) / payload))
    r = go(dp, hook, raw)
    assert (r.verdict, r.raw) == (UNSPEC, raw)


@SETTINGS
@given(proto=protos, cut=st.integers(0, 100), mode=st.sampled_from(["long", "cut", "short"]), payload=payloads)
def test_malformed_or_truncated_packets_are_never_translated(dp, proto, cut, mode, payload) -> None:
    forget_flows(dp)
    dp.dnat.put(DnatKey(6 if proto == "tcp" else 17, None, 8080), DnatTarget(IPv6Address(C1), 80, 1))
    raw = bytearray(make(proto, "2001:db8:77::1", HOST, 4000, 8080, payload))
    header_cut = 54 + min(cut, 19 if proto == "tcp" else 7)
    if mode == "long":  # payload length beyond the packet
        raw[18:20] = (len(raw) - 54 + 1 + cut).to_bytes(2, "big")
    elif mode == "cut":  # cut inside the upper-layer header, length as before
        raw = raw[:header_cut]
    else:  # an upper-layer header shorter than its kind, length consistent
        raw = raw[:header_cut]
        raw[18:20] = (header_cut - 54).to_bytes(2, "big")
    r = go(dp, PUBLIC_INGRESS, bytes(raw))
    assert r.verdict in (UNSPEC, SHOT)
    if r.verdict == UNSPEC:
        assert r.raw == bytes(raw)
    assert dp.flows() == []
