"""The reconciler against a real Datapath (bcc-loaded, pinned maps) in a lab's host namespace.

Desired states come from the captured Docker 20.10 inspect data (tests/control/data)
and the lab's real interfaces; the bridges Docker would have made are created by hand.
Every test body runs in a thread that entered the lab's host netns (`in_host_ns`), as
the daemon runs inside it: netlink sockets then live there.
"""

from __future__ import annotations

import ctypes
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import pytest

from v6nat_ebpf.datapath import Datapath, DatapathConfig, DnatKey, VethEntry, layout
from v6nat_ebpf.datapath.maps import _be16
from v6nat_ebpf.host_source import read_host_state
from v6nat_ebpf.lab import Lab, LabConfig
from v6nat_ebpf.model import (
    DesiredState, DockerState, HostState, NetworkRoute, PortMapping, PublicInterface, VethPolicy, desired_state,
    docker_state_from_inspect,
)
from v6nat_ebpf.reconciler import Reconciler
from v6nat_ebpf.lab.datapath import ct_delete_half, ct_halves

pytestmark = pytest.mark.lab
T = TypeVar("T")
CLONE_NEWNET = 0x40000000

DATA = Path(__file__).parent / "data" / "docker-20.10-inspect.json"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(LabConfig(start_docker=False)) as lab:
        yield lab


@pytest.fixture(scope="module")
def docker_state(lab: Lab) -> DockerState:
    state = docker_state_from_inspect(*_inspect())
    for network in state.networks:
        lab.exec(lab.host_ns, ["ip", "link", "add", network.bridge, "type", "bridge"])
    return state


def _inspect() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    data = json.loads(DATA.read_text())
    return data["networks_verbose"], data["containers"]


def host_state(lab: Lab) -> HostState:
    """The lab host's links and addresses, as the daemon reads them (host_source, in the host netns)."""
    with ThreadPoolExecutor(max_workers=1, initializer=_enter_netns, initargs=(f"/run/netns/{lab.host_ns}",)) as pool:
        return pool.submit(read_host_state, [lab.public_iface]).result()


def _enter_netns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def in_host_ns(lab: Lab) -> Iterator[Callable[[Callable[[], T]], T]]:
    """Run a function in a thread that sits in the lab's host netns; its result or its exception."""
    with ThreadPoolExecutor(max_workers=1, initializer=_enter_netns, initargs=(f"/run/netns/{lab.host_ns}",)) as pool:
        yield lambda fn: pool.submit(fn).result()


@pytest.fixture()
def dp(lab: Lab, in_host_ns: Callable[[Callable[[], T]], T]) -> Iterator[Datapath]:
    datapath = Datapath.open(pin_path=lab.pin_path)
    yield datapath
    datapath.close()
    in_host_ns(lambda: Datapath.cleanup(lab.pin_path))


def test_apply_writes_everything_once_then_nothing(lab: Lab, dp: Datapath, docker_state: DockerState,
                                                   in_host_ns: Callable[[Callable[[], Any]], Any]) -> None:
    desired = desired_state(docker_state, host_state(lab))
    # [::1]:9393 among them (host-local), and pall's 2 ports at its own address too (ula2: no masquerade)
    assert len(desired.mappings) == 12 and len(desired.routes) == 3
    first = in_host_ns(lambda: Reconciler(dp).apply(desired))
    assert first.tables["dnat"].added == 12 and first.tables["networks"].added == 3 and first.errors == 0
    assert set(first.attached) == {lab.public_iface, *desired.bridges}
    assert in_host_ns(dp.attached) == {lab.public_iface: "public", **{b: "bridge" for b in desired.bridges}}
    by_port = {key.host_port: target for key, target in dp.dnat.items()}
    web = next(m for m in desired.mappings if m.host_port == 8080)
    assert by_port[8080].addr == web.container_addr and by_port[8080].mapping_id == web.mapping_id
    second = in_host_ns(lambda: Reconciler(dp).apply(desired))
    assert second.added == 0 and second.removed == 0 and second.unchanged == first.added


def test_a_restarted_daemon_adopts_the_pinned_state(lab: Lab, docker_state: DockerState,
                                                    in_host_ns: Callable[[Callable[[], Any]], Any]) -> None:
    desired = desired_state(docker_state, host_state(lab))
    with Datapath.open(pin_path=lab.pin_path) as first:
        in_host_ns(lambda: Reconciler(first).apply(desired))
    # the daemon is gone; its programs and maps stay. A new one: new programs, the same maps.
    with Datapath.open(pin_path=lab.pin_path) as adopted:
        summary = in_host_ns(lambda: Reconciler(adopted).apply(desired))
        assert summary.added == 0 and summary.removed == 0  # nothing rewritten
        assert set(summary.attached) == set(in_host_ns(adopted.attached))  # its programs replaced the old ones
        again = Reconciler(adopted)
        in_host_ns(lambda: again.apply(desired))
        assert in_host_ns(lambda: again.apply(desired)).attached == ()  # once per daemon
    in_host_ns(lambda: Datapath.cleanup(lab.pin_path))


def test_only_the_difference_is_written(lab: Lab, dp: Datapath, docker_state: DockerState,
                                        in_host_ns: Callable[[Callable[[], Any]], Any]) -> None:
    reconciler = Reconciler(dp)
    in_host_ns(lambda: reconciler.apply(desired_state(docker_state, host_state(lab))))
    networks, containers = _inspect()
    moved = [c for c in containers if c["Name"] != "/pall"]  # pall stopped
    web = next(c for c in moved if c["Name"] == "/web")
    web["NetworkSettings"]["Networks"]["ula1"]["GlobalIPv6Address"] = "fd00:1::99"  # web replaced
    summary = in_host_ns(lambda: reconciler.apply(desired_state(docker_state_from_inspect(networks, moved),
                                                                host_state(lab))))
    # web's 5 IPv6 mappings ([::1]:9393 too) rewritten in place, pall's 4 removed (2 host ports, 2 at its own
    # address), range's 3 untouched
    assert (summary.tables["dnat"].added, summary.tables["dnat"].removed, summary.tables["dnat"].unchanged) == (5, 4, 3)
    assert {t.addr for k, t in dp.dnat.items() if k.host_port == 8080} == {IPv6Address("fd00:1::99")}


def test_docker_unknown_keeps_the_docker_tables(lab: Lab, dp: Datapath, docker_state: DockerState,
                                                in_host_ns: Callable[[Callable[[], Any]], Any]) -> None:
    in_host_ns(lambda: Reconciler(dp).apply(desired_state(docker_state, host_state(lab))))
    summary = in_host_ns(lambda: Reconciler(dp).apply(desired_state(DockerState(), host_state(lab)),
                                                      docker_known=False))
    assert "dnat" not in summary.tables and summary.detached == ()
    assert len(dp.dnat.items()) == 12 and len(dp.networks.items()) == 3  # ula1, ula2, gua (internal)


def test_host_address_changes_rewrite_host_tables(lab: Lab, dp: Datapath,
                                                  in_host_ns: Callable[[Callable[[], Any]], Any]) -> None:
    reconciler = Reconciler(dp)
    host = host_state(lab)
    in_host_ns(lambda: reconciler.apply(desired_state(DockerState(), host)))
    new = IPv6Address("2001:db8:1::99")
    iface = host.public[0]
    moved = HostState(public=(PublicInterface(iface.ifindex, iface.name, (new, lab.host_addr)),), links=host.links)
    summary = in_host_ns(lambda: reconciler.apply(desired_state(DockerState(), moved)))
    assert summary.tables["public_ifaces"].added == 1 and summary.tables["host_addrs"].added == 1
    assert dict(dp.public_ifaces.items()) == {iface.ifindex: new}
    assert dict(dp.host_addrs.items()) == {new: iface.ifindex, lab.host_addr: iface.ifindex}


def _many(count: int, first: int = 20000) -> DesiredState:
    return DesiredState(mappings=tuple(
        PortMapping(6, None, port, IPv6Address("fd00:1::2"), port, "many", "ula1") for port in range(first, first + count)))


def test_5000_mappings_in_batches(dp: Datapath) -> None:
    reconciler = Reconciler(dp)  # no interfaces in these states: nothing to attach, no netns needed
    started = time.monotonic()
    summary = reconciler.apply(_many(5000))
    took = time.monotonic() - started
    assert summary.tables["dnat"].added == 5000 and summary.errors == 0
    assert len(dp.dnat.items()) == 5000
    started = time.monotonic()
    again = reconciler.apply(_many(5000))
    print(f"\nMEASURED reconcile 5,000 new mappings: {took * 1000:.0f} ms; "
          f"5,000 unchanged: {(time.monotonic() - started) * 1000:.0f} ms")
    assert again.tables["dnat"].unchanged == 5000
    assert reconciler.apply(_many(0)).tables["dnat"].removed == 5000


def test_write_errors_are_counted_not_fatal(lab: Lab, in_host_ns: Callable[[Callable[[], Any]], Any]) -> None:
    pins = lab.pin_path + "-small"
    small = Datapath.open(pin_path=pins, config=DatapathConfig(dnat_max=16))
    try:
        summary = Reconciler(small).apply(_many(20))
        assert summary.tables["dnat"].errors == 4 and len(small.dnat.items()) == 16
        assert DnatKey(6, None, 20000) in dict(small.dnat.items())
    finally:
        small.close()
        in_host_ns(lambda: Datapath.cleanup(pins))


def test_ports_of_managed_networks_get_the_veth_program(lab: Lab, dp: Datapath, docker_state: DockerState,
                                                         in_host_ns: Callable[[Callable[[], Any]], Any]) -> None:
    networks, containers = _inspect()
    for network in networks:
        if network["Name"] == "ula1":
            network["Options"] = {"com.docker.network.bridge.enable_icc": "false"}
    icc_off = docker_state_from_inspect(networks, containers)
    bridge = next(n.bridge for n in icc_off.networks if n.name == "ula1")
    lab.exec(lab.host_ns, ["ip", "link", "add", "vport0", "type", "veth", "peer", "name", "vport0c", "netns",
                           lab.client_ns])  # the peer in another namespace, as a container's
    lab.exec(lab.host_ns, ["ip", "link", "set", "vport0", "master", bridge])
    lab.exec(lab.host_ns, ["ip", "-6", "addr", "add", "fd00:1::1/64", "dev", bridge, "nodad"])
    try:
        reconciler = Reconciler(dp)
        desired = desired_state(icc_off, host_state(lab))
        assert desired.veths == ("vport0",)
        assert {r.prefix.compressed: r.gateway for r in desired.routes}["fd00:1::/64"] == IPv6Address("fd00:1::1")
        first = in_host_ns(lambda: reconciler.apply(desired))
        assert "vport0" in first.attached and first.errors == 0
        assert in_host_ns(dp.attached)["vport0"] == "veth"
        entry = dict(dp.networks.items())[next(r.prefix for r in desired.routes if not r.icc)]
        assert (entry.icc, entry.gateway) == (False, IPv6Address("fd00:1::1"))
        # kept: by a later pass, and while Docker is unknown
        assert in_host_ns(lambda: reconciler.apply(desired)).detached == ()
        assert in_host_ns(lambda: Reconciler(dp).apply(desired_state(DockerState(), host_state(lab)),
                                                       docker_known=False)).detached == ()
        # kept when the network has ICC again (the fast path starts there too)
        assert desired_state(docker_state, host_state(lab)).veths == ("vport0",)
        assert in_host_ns(lambda: reconciler.apply(desired_state(docker_state, host_state(lab)))).detached == ()
        # removed once Docker no longer has the network
        again = in_host_ns(lambda: reconciler.apply(desired_state(DockerState(), host_state(lab))))
        assert "vport0" in again.detached and "vport0" not in in_host_ns(dp.attached)
    finally:
        lab.exec(lab.host_ns, ["ip", "link", "del", "vport0"])
        lab.exec(lab.host_ns, ["ip", "-6", "addr", "flush", "dev", bridge, "scope", "global"])


def test_veth_entries_are_written_before_the_program_and_removed_when_stale(
        lab: Lab, dp: Datapath, in_host_ns: Callable[[Callable[[], Any]], Any]) -> None:
    lab.exec(lab.host_ns, ["ip", "link", "add", "vown0", "type", "veth", "peer", "name", "vown0c", "netns",
                           lab.client_ns])
    try:
        ifindex = next(link.ifindex for link in host_state(lab).links if link.name == "vown0")
        policy = VethPolicy(77, 5, True, False, False, (IPv6Address("fd00:1::2"),), bytes.fromhex("02420a000001"))
        written: list[tuple[str, dict[int, Any]]] = []

        class Recording:
            """dp, noting what the veths map holds when the veth program is attached."""

            def __getattr__(self, name: str) -> Any:
                return getattr(dp, name)

            def attach_veth(self, name: str) -> None:
                written.append((name, dict(dp.veths.items())))
                dp.attach_veth(name)

        reconciler = Reconciler(Recording())
        desired = DesiredState(veths=("vown0",), veth_policies=((ifindex, policy),))
        summary = in_host_ns(lambda: reconciler.apply(desired))
        assert summary.tables["veths"].added == 1 and summary.errors == 0
        entry = VethEntry(77, 5, True, False, False, (IPv6Address("fd00:1::2"),), bytes.fromhex("02420a000001"))
        assert written == [("vown0", {ifindex: entry})]  # the entry was there before the program
        assert dict(dp.veths.items()) == {ifindex: entry}
        # the container went (its veth not yet): the entry goes, the program stays and drops
        summary = in_host_ns(lambda: reconciler.apply(DesiredState(veths=("vown0",))))
        assert summary.tables["veths"].removed == 1 and dict(dp.veths.items()) == {}
        # entries nobody wants any more are removed at a full resync whoever wrote them
        dp.veths.put(4242, entry)
        assert in_host_ns(lambda: Reconciler(dp).apply(DesiredState())).tables["veths"].removed == 1
        # Docker unknown: the table is left as it is
        dp.veths.put(4242, entry)
        assert "veths" not in in_host_ns(lambda: Reconciler(dp).apply(DesiredState(), docker_known=False)).tables
        assert dict(dp.veths.items()) == {4242: entry}
    finally:
        lab.exec(lab.host_ns, ["ip", "link", "del", "vown0"])


def _ct_pair(dp: Datapath, table: int, kind: str, orig: tuple[str, int, str, int],
             new: tuple[str, int, str, int], mapping_id: int = 0) -> tuple[layout.RawCtKey, layout.RawCtKey]:
    """Write a conntrack pair (proto TCP) into table 0 (assured) or 1 (unassured): the original
    direction's tuple `orig` (saddr, sport, daddr, dport) translated to `new`; returns both keys."""
    h = layout.header()

    def addr(text: str) -> layout.Addr:
        return layout.Addr.from_buffer_copy(IPv6Address(text).packed)

    def key(saddr: str, sport: int, daddr: str, dport: int) -> layout.RawCtKey:
        return layout.RawCtKey(addr(saddr), addr(daddr), _be16(sport), _be16(dport), 6)

    def half(t: tuple[str, int, str, int], direction: str) -> layout.RawCtEntry:
        e = layout.RawCtEntry()
        e.saddr, e.sport, e.daddr, e.dport = addr(t[0]), _be16(t[1]), addr(t[2]), _be16(t[3])
        e.kind, e.dir, e.mapping_id = h.const(f"CT_KIND_{kind}"), h.const(f"CT_DIR_{direction}"), mapping_id
        e.last_seen_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        return e

    raw = dp.conntrack.tables[table].raw
    original, reply = key(*orig), key(new[2], new[3], new[0], new[1])
    raw.update(original, half(new, "ORIGINAL"))
    raw.update(reply, half((orig[2], orig[3], orig[0], orig[1]), "REPLY"))
    return original, reply


def test_flows_do_not_outlive_their_container_or_mapping(dp: Datapath) -> None:
    """Issue 12 point 7: pairs of a container address that went (also when another container took it in
    the same pass) or of a removed mapping are deleted with it, both halves, both tables; a full resync
    also deletes orphans of addresses and mappings nobody owns."""
    client, public, remote = "2001:db8:1::2", "2001:db8:1::1", "2001:db8:7::7"
    a, b = "fd00:1::2", "fd00:1::3"
    web = PortMapping(6, None, 8080, IPv6Address(a), 80, "a", "ula1")
    route = NetworkRoute(IPv6Network("fd00:1::/64"), 1, 5, True, True, False, None, IPv6Address("fd00:1::1"))

    def state(owners: dict[str, str], mappings: tuple[PortMapping, ...]) -> DesiredState:
        return DesiredState(mappings=mappings, routes=(route,),
                            container_addrs=tuple(sorted((cid, IPv6Address(addr)) for cid, addr in owners.items())))

    dnat_a = _ct_pair(dp, 0, "DNAT", (client, 5555, public, 8080), (client, 5555, a, 80), web.mapping_id)
    snat_a = _ct_pair(dp, 0, "SNAT", (a, 4000, remote, 443), (public, 61000, remote, 443))
    snat_b = _ct_pair(dp, 1, "SNAT", (b, 4001, remote, 443), (public, 61001, remote, 443))
    orphan = _ct_pair(dp, 1, "SNAT", ("fd00:1::9", 4002, remote, 443), (public, 61002, remote, 443))
    stale_map = _ct_pair(dp, 0, "DNAT", (client, 5556, public, 9090), (client, 5556, a, 90), 12345)
    ct_delete_half(dp, snat_a[0])  # a lone reply half (its original evicted) is still A's
    gateway = _ct_pair(dp, 0, "SNAT", ("fd00:1::1", 4003, remote, 443), (public, 61003, remote, 443))

    def present() -> set[bytes]:
        return set(ct_halves(dp))

    reconciler = Reconciler(dp)
    first = reconciler.apply(state({"id-a": a, "id-b": b}, (web,)))  # start-up: a full pass, orphans go
    assert first.flows_forgotten == 2
    kept = {bytes(k) for pair in (dnat_a, snat_b, gateway) for k in pair} | {bytes(snat_a[1])}
    assert present() == kept
    # nothing removed: no walk, nothing forgotten
    assert reconciler.apply(state({"id-a": a, "id-b": b}, (web,)), reread=False).flows_forgotten == 0
    # b replaced by another container at the same address, in one pass: b's flows go all the same
    second = reconciler.apply(state({"id-a": a, "id-c": b}, (web,)), reread=False)
    assert second.flows_forgotten == 1 and present() == kept - {bytes(k) for k in snat_b}
    # the mapping unpublished (a stays): its DNAT flow goes, a's own outbound flow stays
    third = reconciler.apply(state({"id-a": a, "id-c": b}, ()), reread=False)
    assert third.flows_forgotten == 1 and present() == {bytes(snat_a[1])} | {bytes(k) for k in gateway}
    # a gone: its lone half too
    assert reconciler.apply(state({"id-c": b}, ()), reread=False).flows_forgotten == 1
    assert present() == {bytes(k) for k in gateway}
    # a prefix shorter than a byte (every address a candidate), and owned addresses kept
    assert dp.conntrack.forget(prefixes=[IPv6Network("fc00::/7")], owned=[IPv6Address("fd00:1::1")]) == 0
    assert dp.conntrack.forget(prefixes=[IPv6Network("fc00::/7")]) == 1 and present() == set()


def test_host_source_names_a_containers_namespace_as_its_veths_peer(lab: Lab) -> None:
    """The pairing of a veth with its container: the nsid the host gave the namespace of a SandboxKey file
    is the veth's peer netnsid (here the lab's public link, whose peer is in the client namespace); a
    SandboxKey that is gone (in a directory that exists) names nothing, not even by pid."""
    client = (f"/run/netns/{lab.client_ns}", 0)
    gone = (f"/run/netns/{lab.client_ns}-gone", 1)

    def read() -> HostState:
        with ThreadPoolExecutor(max_workers=1, initializer=_enter_netns,
                                initargs=(f"/run/netns/{lab.host_ns}",)) as pool:
            return pool.submit(read_host_state, [lab.public_iface], True, [client, gone]).result()

    for _ in range(2):  # the second time from the cache
        host = read()
        public = host.link(lab.public_iface)
        assert public is not None and public.peer_netnsid is not None and public.mac is not None
        assert host.nsid_of(client) == public.peer_netnsid
        assert host.nsid_of(gone) is None


def test_source_rules_are_written_once_per_set_and_go_with_their_last_mapping(dp: Datapath) -> None:
    from v6nat_ebpf.policy import SourceRules

    office = SourceRules(deny=(IPv6Network("2001:db8:1:bad::/64"),), allow=(IPv6Network("2001:db8:1::/48"),))
    home = SourceRules(allow=(IPv6Network("2001:db8:2::/48"),))
    desired = _many(100)
    rules = {m.mapping_id: office for m in desired.mappings}
    rules[desired.mappings[0].mapping_id] = home
    reconciler = Reconciler(dp)
    summary = reconciler.apply(desired, rules=rules)
    assert summary.tables["policy"].added == 3 and summary.errors == 0
    assert {(k.policy_id, str(k.prefix)): allowed for k, allowed in dp.policy.items()} == {
        (office.policy_id, "2001:db8:1:bad::/64"): False, (office.policy_id, "2001:db8:1::/48"): True,
        (home.policy_id, "2001:db8:2::/48"): True}
    targets = {key.host_port: target for key, target in dp.dnat.items()}
    assert (targets[20000].policy_id, targets[20000].default_deny) == (home.policy_id, True)
    assert {targets[p].policy_id for p in range(20001, 20100)} == {office.policy_id}
    again = reconciler.apply(desired, rules=rules)
    assert again.added == 0 and again.removed == 0
    del rules[desired.mappings[0].mapping_id]  # the one mapping of `home` is now open to all
    summary = reconciler.apply(desired, rules=rules, reread=False)
    assert summary.tables["policy"].removed == 1 and len(dp.policy) == 2
    assert dict(dp.dnat.items())[DnatKey(6, None, 20000)].policy_id == 0
