#!/usr/bin/env python3
"""Per-packet cost of each datapath path, measured in the kernel with
BPF_PROG_TEST_RUN, printed as a table (ns/packet).

Paths run with `repeat` only where the second run does the same work as the
first: packets that are passed or dropped, and established flows set up as a
ping-pong (two conntrack halves that translate a packet into the other and
back, so every run is one established translation). Paths that change state
(a new flow) run once per packet with the state reset between runs, and report
the median of the kernel's single-run figure (which includes ~tens of ns of
timer overhead).

Needs root. Loads its own datapath under a unique pin path and removes it.
Nothing is asserted: figures are noisy, compare ratios within one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scapy.layers.inet import TCP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402

from v6nat_ebpf.datapath import (Ban, BanKey, Datapath, DatapathConfig, DnatKey, DnatTarget, NetworkEntry,  # noqa: E402
                                 PolicyKey, VethEntry)
from v6nat_ebpf.policy import SourceRules  # noqa: E402
from bench.systems import policy_allowlist, policy_bans  # noqa: E402
from v6nat_ebpf.datapath import layout  # noqa: E402
from v6nat_ebpf.datapath.trace import TraceFilter  # noqa: E402
from v6nat_ebpf.lab.testrun import run  # noqa: E402
from v6nat_ebpf.lab.datapath import clear, ct_delete_half, ct_halves  # noqa: E402

HOST, CLIENT, REMOTE = "2001:db8:1::1", "2001:db8:2::99", "2001:db8:9::1"
CONTAINER, CONTAINER2 = "fd00:1::2", "fd00:1::3"
TARGET_OUTSIDE = "2001:db8:5::2"  # a DNAT target the isolation check lets a ping-pong through


def frame(l3) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / l3)


def tcp(src: str, dst: str, sport: int, dport: int, flags: str = "A", size: int = 64) -> bytes:
    return frame(IPv6(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags) / (b"x" * size))


def be16(port: int) -> int:
    return int.from_bytes(port.to_bytes(2, "big"), "little")


def half(dp: Datapath, key: tuple, rewrite: tuple, kind: str, direction: str) -> None:
    """Write one conntrack half: key (saddr, daddr, sport, dport) -> rewrite."""
    h = layout.header()
    k = layout.RawCtKey(layout.Addr(*IPv6Address(key[0]).packed), layout.Addr(*IPv6Address(key[1]).packed),
                        be16(key[2]), be16(key[3]), 6)
    v = layout.RawCtEntry(layout.Addr(*IPv6Address(rewrite[0]).packed),
                          layout.Addr(*IPv6Address(rewrite[1]).packed), be16(rewrite[2]), be16(rewrite[3]),
                          h.const(f"CT_KIND_{kind}"), h.const(f"CT_DIR_{direction}"),
                          h.const("CT_TCP_ESTABLISHED"))
    dp.conntrack.tables[0].raw.update(k, v)


def mirror(t: tuple) -> tuple:
    return (t[1], t[0], t[3], t[2])


def ping_pong(dp: Datapath, a: tuple, b: tuple, kind: str) -> None:
    """a -> b and b -> a as original halves, each with its reply half."""
    for key, rewrite in ((a, b), (b, a)):
        half(dp, key, rewrite, kind, "ORIGINAL")
        half(dp, mirror(rewrite), mirror(key), kind, "REPLY")


def repeated(dp: Datapath, prog: str, pkt: bytes, repeat: int) -> float:
    return run(dp.prog_fd(prog), pkt, repeat=repeat).duration_ns


def single(dp: Datapath, prog: str, pkt: bytes, runs: int, reset) -> float:
    samples = []
    for _ in range(runs):
        reset()
        samples.append(run(dp.prog_fd(prog), pkt).duration_ns)
    return statistics.median(samples)


def setup(dp: Datapath) -> None:
    """Every interface is lo (ifindex 1), where BPF_PROG_TEST_RUN runs packets: the public interface, the
    network's bridge, and the containers' veth (both containers' addresses on it)."""
    clear(dp)
    dp.host_addrs.put(IPv6Address(HOST), 1)
    dp.public_ifaces.put(1, IPv6Address(HOST))
    dp.networks.put(IPv6Network("fd00:1::/64"), NetworkEntry(1, 1, True, True, False, None))
    dp.veths.put(1, VethEntry(1, 1, True, True, False, (IPv6Address(CONTAINER), IPv6Address(CONTAINER2)),
                              bytes.fromhex("020000000002")))


def forget_flows(dp: Datapath) -> None:
    for kb in ct_halves(dp):
        ct_delete_half(dp, layout.RawCtKey.from_buffer_copy(kb))


def measure(dp: Datapath, repeat: int, runs: int, dnat_entries: int) -> list[tuple[str, str, float]]:
    setup(dp)
    # Filler ports from 1024 up (50,000 of them end at 51,023); 8080 is then set to the measured target.
    dp.dnat.put_many((DnatKey(6, None, 1024 + i), DnatTarget(IPv6Address(CONTAINER), 80, i + 1))
                     for i in range(dnat_entries))
    dp.dnat.put(DnatKey(6, None, 8080), DnatTarget(IPv6Address(CONTAINER), 80, 99999))
    rows = []
    pi, pe, bi = "v6nat_public_ingress", "v6nat_public_egress", "v6nat_bridge_ingress"

    rows.append(("public ingress: not ours (host's own port)", "repeat",
                 repeated(dp, pi, tcp(CLIENT, HOST, 40000, 22), repeat)))
    rows.append(("public egress: not ours (host's own flow)", "repeat",
                 repeated(dp, pe, tcp(HOST, REMOTE, 22, 40000), repeat)))
    rows.append(("bridge ingress: container to outside", "repeat",
                 repeated(dp, bi, tcp(CONTAINER, REMOTE, 5555, 443), repeat)))
    rows.append(("veth ingress: container to outside, no flow", "repeat",
                 repeated(dp, "v6nat_veth_ingress", tcp(CONTAINER, REMOTE, 5555, 443), repeat)))
    rows.append(("bridge egress: toward a container, no flow", "repeat",
                 repeated(dp, "v6nat_bridge_egress", tcp(REMOTE, CONTAINER, 443, 5555), repeat)))
    rows.append(("public ingress: isolation drop", "repeat",
                 repeated(dp, pi, tcp(CLIENT, CONTAINER, 40000, 80), repeat)))

    a, b = (CLIENT, HOST, 40000, 8080), (CLIENT, TARGET_OUTSIDE, 40000, 80)
    ping_pong(dp, a, b, "DNAT")
    rows.append(("public ingress: established DNAT", "repeat", repeated(dp, pi, tcp(*a), repeat)))
    # Both ends of this ping-pong are container sources: public egress passes a host source untouched
    # (the host's own flows) before any conntrack lookup.
    a, b = (CONTAINER, REMOTE, 5555, 443), (CONTAINER2, REMOTE, 61001, 443)
    ping_pong(dp, a, b, "SNAT")
    rows.append(("public egress: established SNAT", "repeat", repeated(dp, pe, tcp(*a), repeat)))

    reset = lambda: forget_flows(dp)  # noqa: E731
    rows.append(("public ingress: new DNAT flow (SYN)", "single",
                 single(dp, pi, tcp(CLIENT, HOST, 40000, 8080, "S"), runs, reset)))
    rows.append(("public egress: new SNAT flow (SYN, port kept)", "single",
                 single(dp, pe, tcp(CONTAINER, REMOTE, 61500, 443, "S"), runs, reset)))
    rows.append(("bridge ingress: new hairpin flow (SYN)", "single",
                 single(dp, bi, tcp(CONTAINER2, HOST, 61500, 8080, "S"), runs, reset)))

    # Source policy (issue 16): the published port with a 1,000-prefix allowlist, 10,000 bans in force.
    rules = SourceRules(allow=tuple(policy_allowlist(IPv6Address(CLIENT))))
    for prefix, allowed in rules.entries:
        dp.policy.put(PolicyKey(rules.policy_id, prefix), allowed)
    dp.dnat.put(DnatKey(6, None, 8080), DnatTarget(IPv6Address(CONTAINER), 80, 99999, rules.policy_id, True))
    for prefix in policy_bans():
        dp.bans.put(BanKey(prefix), Ban(0, 0))
    dp.bans.bump_generation()
    rows.append(("public ingress: new DNAT flow (SYN), with policy", "single",
                 single(dp, pi, tcp(CLIENT, HOST, 40000, 8080, "S"), runs, reset)))
    a, b = (CLIENT, HOST, 40000, 8080), (CLIENT, TARGET_OUTSIDE, 40000, 80)
    ping_pong(dp, a, b, "DNAT")
    rows.append(("public ingress: established DNAT, with policy", "repeat", repeated(dp, pi, tcp(*a), repeat)))
    return rows


def measure_trace(dp: Datapath, repeat: int, rounds: int) -> list[tuple[str, str, float]]:
    """The cost of `v6nat trace` on packets it does not show: each path with the trace off, then with a
    tracer on whose filter matches none of them (a port no packet uses), interleaved for `rounds`,
    medians. Runs after measure(): its ports are in place; the established flows are set up again (the
    new-flow rows forgot every flow)."""
    ping_pong(dp, (CLIENT, HOST, 40000, 8080), (CLIENT, TARGET_OUTSIDE, 40000, 80), "DNAT")
    ping_pong(dp, (CONTAINER, REMOTE, 5555, 443), (CONTAINER2, REMOTE, 61001, 443), "SNAT")
    paths = [
        ("public ingress: not ours (host's own port)", "v6nat_public_ingress", tcp(CLIENT, HOST, 40000, 22)),
        ("public ingress: established DNAT", "v6nat_public_ingress", tcp(CLIENT, HOST, 40000, 8080)),
        ("public egress: established SNAT", "v6nat_public_egress", tcp(CONTAINER, REMOTE, 5555, 443)),
        ("public ingress: isolation drop", "v6nat_public_ingress", tcp(CLIENT, CONTAINER, 40000, 80)),
    ]
    samples: dict[tuple[str, str], list[float]] = {}
    tracer = dp.tracer()
    for _ in range(rounds):
        for state in ("trace off", "idle tracer"):
            if state == "idle tracer":
                tracer.start(TraceFilter(port=1))
            try:
                for name, prog, pkt in paths:
                    samples.setdefault((name, state), []).append(repeated(dp, prog, pkt, repeat))
            finally:
                tracer.stop()
    return [(f"{name} ({state})", "repeat", statistics.median(v)) for (name, state), v in samples.items()]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  sudo .venv/bin/python bench/datapath_ns_per_packet.py\n"
               "  sudo .venv/bin/python bench/datapath_ns_per_packet.py --quick\n"
               "  sudo .venv/bin/python bench/datapath_ns_per_packet.py --dnat-entries 50000",
    )
    parser.add_argument("--quick", action="store_true", help="few runs (a smoke test, not a measurement)")
    parser.add_argument("--repeat", type=int, default=200_000, help="BPF_PROG_TEST_RUN repeat (default 200000)")
    parser.add_argument("--runs", type=int, default=2000, help="single runs per stateful path (default 2000)")
    parser.add_argument("--dnat-entries", type=int, default=5000, help="published ports loaded (default 5000)")
    parser.add_argument("--trace-rounds", type=int, default=5,
                        help="interleaved rounds of trace off / idle tracer (default 5)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("datapath_ns_per_packet: needs root (bpf)", file=sys.stderr)
        return 1
    repeat, runs = (1000, 20) if args.quick else (args.repeat, args.runs)
    pin_path = f"/sys/fs/bpf/v6dp-bench-{os.getpid()}"
    cfg = DatapathConfig(dnat_max=max(65536, args.dnat_entries + 1))
    try:
        dp = Datapath.open(pin_path, cfg)  # inside: a failed load leaves its pin directory behind otherwise
        try:
            rows = measure(dp, repeat, runs, args.dnat_entries)
            rows += measure_trace(dp, repeat, 1 if args.quick else args.trace_rounds)
        finally:
            dp.close()
    finally:
        Datapath.cleanup(pin_path)
    print(f"{'path':<62} {'method':<7} {'ns/packet':>9}")
    for name, method, ns in rows:
        print(f"{name:<62} {method:<7} {ns:>9.0f}")
    print(f"(repeat={repeat}, single runs={runs}, published ports={args.dnat_entries + 1})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
