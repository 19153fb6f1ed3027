"""`v6nat flows` on real conntrack entries: every kind, state, protocol and lone half, printed exactly as
the format says (the columns of `conntrack -L`, and JSON with the fields of datapath.Flow), filtered as asked.

The flows come from real packets through the programs (BPF_PROG_TEST_RUN); the command runs as users run it.
The expected text is built here from `Datapath.flows()` (Flow objects, IPv6Address per address).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

from v6nat_ebpf.commands import flows as flows_command
from v6nat_ebpf.datapath import Datapath, DnatKey, DnatTarget, Flow, FlowTuple
from v6nat_ebpf.model import protocol_name
from dp_packets import (
    BRIDGE_INGRESS, C1, C2, CLIENT, HOST, OTHER, PUBLIC_EGRESS, PUBLIC_INGRESS, addr, delete_ct_half, go, ping, tcp,
    udp,
)

V6NAT = [sys.executable, "-m", "v6nat_ebpf.cli"]


def diverse_flows(dp: Datapath) -> None:
    """DNAT (established, assured; and syn_sent), SNAT over TCP, UDP and ICMPv6 (one closed by a RST),
    hairpin, a pair without its reply half and a reply half without its original."""
    dp.dnat.put(DnatKey(6, None, 8080), DnatTarget(addr(C1), 80, 3))
    dp.dnat.put(DnatKey(17, None, 5353), DnatTarget(addr(C2), 53, 4))
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40000, 8080, "S"))
    go(dp, PUBLIC_EGRESS, tcp(C1, CLIENT, 80, 40000, "SA"))
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40000, 8080, "A", ack=1001, payload=b"x" * 300))
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40001, 8080, "S"))
    go(dp, PUBLIC_INGRESS, udp(CLIENT, HOST, 41000, 5353))
    go(dp, PUBLIC_EGRESS, tcp(C1, OTHER, 61555, 443))
    go(dp, PUBLIC_EGRESS, tcp(C1, OTHER, 61556, 443))
    go(dp, PUBLIC_EGRESS, tcp(C1, OTHER, 61556, 443, "R"))
    go(dp, PUBLIC_EGRESS, udp(C2, OTHER, 5000, 53))
    go(dp, PUBLIC_EGRESS, ping(C1, OTHER, 5))
    go(dp, BRIDGE_INGRESS, tcp(C2, HOST, 61600, 8080))  # hairpin to C1
    go(dp, PUBLIC_INGRESS, tcp(CLIENT, HOST, 40002, 8080, "S"))
    delete_ct_half(dp, C1, CLIENT, 80, 40002, 6)  # a DNAT pair without its reply half
    delete_ct_half(dp, C1, OTHER, 61555, 443, 6)  # an SNAT pair of which only the reply half is left


def _tuple_text(t: FlowTuple) -> str:
    return f"src={t.saddr} dst={t.daddr} sport={t.sport} dport={t.dport}"


def expected_line(f: Flow) -> str:
    """The format of `v6nat flows`, as users (and scripts that cut columns) read it."""
    return (f"{protocol_name(f.proto):<6} {f.proto:<3} {f.kind:<7} {f.state:<12} {_tuple_text(f.original)} "
            f"{_tuple_text(f.translated)} packets={f.packets} bytes={f.bytes} age={f.age_s:.0f}s")


def expected_json(f: Flow) -> dict[str, Any]:
    def end(t: FlowTuple) -> dict[str, Any]:
        return {"saddr": str(t.saddr), "daddr": str(t.daddr), "sport": t.sport, "dport": t.dport}

    return {"proto": f.proto, "kind": f.kind, "state": f.state, "original": end(f.original),
            "translated": end(f.translated), "packets": f.packets, "bytes": f.bytes, "age_s": f.age_s,
            "idle_s": f.idle_s, "mapping_id": f.mapping_id}


def v6nat_flows(dp: Datapath, *args: str) -> str:
    result = subprocess.run([*V6NAT, "flows", "--pin-path", str(dp.pin_path), *args], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_listing_shows_every_flow_in_its_format(dp: Datapath) -> None:
    diverse_flows(dp)
    flows = dp.flows()
    assert {(f.proto, f.kind, f.state) for f in flows} == {
        (6, "dnat", "established"), (6, "dnat", "syn_sent"), (17, "dnat", "none"), (6, "snat", "syn_sent"),
        (6, "snat", "closed"), (17, "snat", "none"), (58, "snat", "none"), (6, "hairpin", "syn_sent")}
    assert len(flows) == 9  # the lone reply half is a flow of its own
    lines = v6nat_flows(dp).splitlines()
    assert lines[-1] == "v6nat flows: 9 flow entries shown"
    # The age is the only field that moves between the two readings.
    def ageless(line: str) -> str:
        return re.sub(r" age=\d+s$", "", line)
    assert [ageless(line) for line in lines[:-1]] == [ageless(expected_line(f)) for f in flows]
    assert all(re.search(r" age=0s$", line) for line in lines[:-1])


def test_json_is_the_flows_fields(dp: Datapath) -> None:
    diverse_flows(dp)
    listed = json.loads(v6nat_flows(dp, "--json"))
    expected = [expected_json(f) for f in dp.flows()]
    for flow in listed + expected:
        assert 0 <= flow.pop("age_s") < 30 and 0 <= flow.pop("idle_s") < 30
    assert listed == expected


def test_text_and_json_are_exactly_the_format_at_one_instant(dp: Datapath) -> None:
    """Byte for byte, at one clock reading: the lines above, and json.dumps(indent=2) of the flows' fields."""
    diverse_flows(dp)
    now = 10**18  # later than every flow
    flows = dp.conntrack.flows(now)
    assert flows_command.flow_lines(dp.flow_records(now)) == [expected_line(f) + "\n" for f in flows]
    assert flows_command.flows_json(dp.flow_records(now)) == json.dumps([expected_json(f) for f in flows],
                                                                       indent=2) + "\n"
    assert flows_command.flows_json([]) == json.dumps([], indent=2) + "\n"


def test_filters_narrow_by_protocol_kind_address_and_port(dp: Datapath) -> None:
    diverse_flows(dp)
    flows = dp.flows()

    def listed(*args: str) -> list[tuple[Any, ...]]:
        return [(f["proto"], f["kind"], f["original"]["saddr"], f["original"]["sport"])
                for f in json.loads(v6nat_flows(dp, "--json", *args))]

    def chosen(keep: Any) -> list[tuple[Any, ...]]:
        return [(f.proto, f.kind, str(f.original.saddr), f.original.sport) for f in flows if keep(f)]

    def ends(f: Flow) -> tuple[FlowTuple, FlowTuple]:
        return f.original, f.translated

    assert listed("--proto", "udp") == chosen(lambda f: f.proto == 17) != []
    assert listed("--kind", "snat") == chosen(lambda f: f.kind == "snat") != []
    assert listed("--proto", "tcp", "--kind", "dnat") == chosen(lambda f: (f.proto, f.kind) == (6, "dnat")) != []
    # either end, before or after translation
    assert listed("--addr", C2) == chosen(lambda f: any(addr(C2) in (t.saddr, t.daddr) for t in ends(f))) != []
    assert listed("--port", "80") == chosen(lambda f: any(80 in (t.sport, t.dport) for t in ends(f))) != []
    assert listed("--port", "5") == chosen(lambda f: f.proto == 58) != []  # an echo's identifier
    assert listed("--addr", "2001:db8::dead") == []
    text = v6nat_flows(dp, "--proto", "icmpv6")
    assert text.splitlines()[-1] == "v6nat flows: 1 flow entries shown" and text.startswith("icmpv6 58  snat")
