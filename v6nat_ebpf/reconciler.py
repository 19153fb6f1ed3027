"""Make the datapath's maps and attachments equal to a DesiredState, with the fewest writes.

Lives here: `plan` (pure: desired vs current table -> puts and deletes) and
`Reconciler`, which compares the desired state with what the maps hold,
applies the plan with batch operations where the table has them, counts failed
writes, and returns a `Summary` for logs and metrics. A full resync and an
event take the same path; only where "what the maps hold" comes from differs:
with `reread` (start-up, full resyncs, after a failure) the maps are read *now*,
so a restarted daemon adopts the pinned state and only fixes what differs, and
anything another process wrote is seen; otherwise a table's content is what
this reconciler last read or wrote cleanly. Reading 50,000 dnat entries takes
about 0.25 s, and an event pass must not spend that before writing the new
container's mapping (until it is written, dockerd's own listening socket on the
host port accepts connections that nobody will ever answer).

Conntrack: the programs create flows, the GC thread expires them, and the
reconciler forgets those Docker took away (`_forget_flows`): when a container's
address leaves the desired state (the container stopped, or another one took
its address in the same pass) or a published mapping is removed, every pair
translating to or from that address or of that mapping is deleted, both tables,
both halves, in the same pass, right after the dnat and veths writes, so the
address is clean before Docker can hand it to the next container. Each full
resync (a pass with `reread`) also removes pairs with an address in a managed
prefix that no container (nor a gateway) owns, and DNAT/hairpin pairs whose
mapping is not published: what a missed event or a daemon restart left behind.
That walk is O(flows), so it runs only then or when something was removed.

Must not import: docker, pyroute2, bcc (it talks to the datapath's typed maps only;
v6nat_ebpf.datapath imports bcc lazily, when programs are compiled).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Hashable, Iterable, Mapping, Protocol, TypeVar

from v6nat_ebpf.datapath import DnatKey, DnatTarget, NetworkEntry, PolicyKey, VethEntry
from v6nat_ebpf.errors import V6natError
from v6nat_ebpf.model import DesiredState, PortMapping
from v6nat_ebpf.policy import SourceRules

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Table(Protocol):
    """The part of a datapath map the reconciler uses (put_many/delete_many are optional)."""

    def items(self) -> Iterable[tuple[Any, Any]]: ...
    def put(self, key: Any, value: Any) -> None: ...
    def delete(self, key: Any) -> None: ...


@dataclass(frozen=True)
class Plan(Generic[K, V]):
    """The writes that turn one table's current content into the desired one."""

    puts: tuple[tuple[K, V], ...]
    deletes: tuple[K, ...]
    unchanged: int


def plan(desired: Mapping[K, V], current: Mapping[K, V]) -> Plan[K, V]:
    """Puts for keys missing or different, deletes for keys not desired; pure and deterministic."""
    puts = tuple((k, v) for k, v in desired.items() if current.get(k, _MISSING) != v)
    deletes = tuple(k for k in current if k not in desired)
    return Plan(puts, deletes, len(desired) - len(puts))


_MISSING = object()


@dataclass(frozen=True)
class TableSummary:
    added: int = 0  # keys written (new or changed)
    removed: int = 0
    unchanged: int = 0
    errors: int = 0


@dataclass(frozen=True)
class Summary:
    """What one reconcile pass did, per table, plus attachments."""

    tables: Mapping[str, TableSummary] = field(default_factory=dict)
    attached: tuple[str, ...] = ()
    detached: tuple[str, ...] = ()
    attach_errors: int = 0
    seconds: float = 0.0
    flows_forgotten: int = 0  # conntrack pairs removed with the addresses and mappings they belonged to

    @property
    def added(self) -> int:
        return sum(t.added for t in self.tables.values())

    @property
    def removed(self) -> int:
        return sum(t.removed for t in self.tables.values())

    @property
    def unchanged(self) -> int:
        return sum(t.unchanged for t in self.tables.values())

    @property
    def errors(self) -> int:
        return sum(t.errors for t in self.tables.values()) + self.attach_errors

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.attached or self.detached)

    def __str__(self) -> str:
        parts = [f"{name} +{t.added} -{t.removed} ={t.unchanged}" + (f" !{t.errors}" if t.errors else "")
                 for name, t in self.tables.items()]
        if self.attached:
            parts.append("attached " + ",".join(self.attached))
        if self.detached:
            parts.append("detached " + ",".join(self.detached))
        if self.attach_errors:
            parts.append(f"attach errors {self.attach_errors}")
        if self.flows_forgotten:
            parts.append(f"flows forgotten {self.flows_forgotten}")
        return "; ".join(parts) + f" in {self.seconds * 1000:.1f} ms"


def _apply_one_by_one(write: Callable[[Any], None], items: Iterable[Any], what: str) -> int:
    errors = 0
    for item in items:
        try:
            write(item)
        except (OSError, V6natError, KeyError, ValueError) as exc:
            errors += 1
            log.warning("%s %s failed: %s", what, item, exc)
    return errors


def apply_plan(table: Table, name: str, todo: Plan[Any, Any]) -> TableSummary:
    """Write `todo` into `table`: batched when the table supports it, one by one when a batch fails."""
    errors = 0
    if todo.puts:
        put_many = getattr(table, "put_many", None)
        try:
            if put_many is None:
                raise OSError("no batch put")
            put_many(list(todo.puts))
        except (OSError, V6natError):
            errors += _apply_one_by_one(lambda kv: table.put(*kv), todo.puts, f"{name} put")
    if todo.deletes:
        delete_many = getattr(table, "delete_many", None)
        try:
            if delete_many is None:
                raise OSError("no batch delete")
            delete_many(list(todo.deletes))
        except (OSError, V6natError):
            errors += _apply_one_by_one(table.delete, todo.deletes, f"{name} delete")
    return TableSummary(len(todo.puts), len(todo.deletes), todo.unchanged, errors)


def _dnat_target(m: PortMapping, rules: SourceRules | None) -> DnatTarget:
    if rules is None:
        return DnatTarget(addr=m.container_addr, port=m.container_port, mapping_id=m.mapping_id)
    return DnatTarget(addr=m.container_addr, port=m.container_port, mapping_id=m.mapping_id,
                      policy_id=rules.policy_id, default_deny=rules.default_deny)


class Reconciler:
    """Applies DesiredStates to one open Datapath.

    `docker_known=False` (Docker never answered since this daemon started)
    leaves the Docker-derived tables (dnat, networks) and the bridge and port
    attachments as they are, so a daemon restarted while Docker is down keeps
    serving the pinned mappings (and enforcing icc=false) instead of wiping them.
    """

    def __init__(self, dp: Any) -> None:
        self._dp = dp
        self._replaced_once: set[str] = set()
        self._written: dict[str, dict[Any, Any]] = {}  # table name -> its content after the last clean pass
        # (container id, address) of the last pass with Docker known: flows of the ones that go are forgotten
        self._owners: frozenset[tuple[str, Any]] | None = None

    def apply(self, desired: DesiredState, docker_known: bool = True, reread: bool = True,
              rules: Mapping[int, SourceRules] | None = None) -> Summary:
        """Make the maps and attachments equal to `desired`; `reread=False` trusts what this
        reconciler last read or wrote for each table instead of reading the maps again. `rules`: the
        source rules of the mappings that have any (policy.resolve)."""
        rules = rules or {}
        started = time.monotonic()
        dp = self._dp
        tables: dict[str, TableSummary] = {}
        # Addresses before mappings: a new wildcard mapping is usable only once its host addresses are known.
        tables["public_ifaces"] = self._table(dp.public_ifaces, "public_ifaces", dict(desired.public_ifaces), reread)
        tables["host_addrs"] = self._table(dp.host_addrs, "host_addrs", dict(desired.host_addrs), reread)
        if docker_known:
            routes = {r.prefix: NetworkEntry(network_id=r.network_id, bridge_ifindex=r.bridge_ifindex,
                                             masquerade=r.masquerade, icc=r.icc, internal=r.internal,
                                             snat_addr=r.snat_addr, gateway=r.gateway, mode=r.mode,
                                             udp_eif=r.udp_eif)
                      for r in desired.routes}
            tables["networks"] = self._table(dp.networks, "networks", routes, reread)
            dnat = {DnatKey(proto=m.proto, host_addr=m.host_addr, host_port=m.host_port):
                    _dnat_target(m, rules.get(m.mapping_id)) for m in desired.mappings}
            # Source rules around the dnat writes: a mapping's new rules are there before it names them,
            # and rules no mapping names any more go after (issue 16). Mappings share rule sets: each once.
            rule_sets = {r.policy_id: r for r in rules.values()}
            policy = {PolicyKey(pid, prefix): allowed for pid, r in rule_sets.items() for prefix, allowed in r.entries}
            policy_plan = plan(policy, self._current(dp.policy, "policy", reread))
            policy_added = apply_plan(dp.policy, "policy", Plan(policy_plan.puts, (), policy_plan.unchanged))
            current_dnat = self._current(dp.dnat, "dnat", reread)
            tables["dnat"] = self._table(dp.dnat, "dnat", dnat, reread, current_dnat)
            policy_removed = apply_plan(dp.policy, "policy", Plan((), policy_plan.deletes, 0))
            tables["policy"] = TableSummary(policy_added.added, policy_removed.removed, policy_plan.unchanged,
                                            policy_added.errors + policy_removed.errors)
            self._note_written("policy", policy, tables["policy"].errors)
            unpublished = {current_dnat[k].mapping_id for k in current_dnat if k not in dnat} - desired.mapping_ids
            # Before any attachment: a veth's program drops every packet until its entry is there.
            veths = {ifindex: VethEntry(network_id=p.network_id, bridge_ifindex=p.bridge_ifindex,
                                        masquerade=p.masquerade, icc=p.icc, internal=p.internal, addrs=p.addrs,
                                        bridge_mac=p.bridge_mac, mode=p.mode)
                     for ifindex, p in desired.veth_policies}
            tables["veths"] = self._table(dp.veths, "veths", veths, reread)
            forgotten = self._forget_flows(desired, unpublished, reread)
        else:
            forgotten = 0
        attached, detached, attach_errors = self._attachments(desired, docker_known)
        summary = Summary(tables, attached, detached, attach_errors, time.monotonic() - started, forgotten)
        log.log(logging.INFO if summary.changed or summary.errors else logging.DEBUG, "reconciled: %s", summary)
        return summary

    def _current(self, table: Table, name: str, reread: bool) -> dict[Any, Any]:
        """What `table` holds: read now, or as this reconciler last left it (see the module docstring)."""
        current = None if reread else self._written.get(name)
        return dict(table.items()) if current is None else current

    def _table(self, table: Table, name: str, desired: dict[Any, Any], reread: bool,
               current: dict[Any, Any] | None = None) -> TableSummary:
        if current is None:
            current = self._current(table, name, reread)
        summary = apply_plan(table, name, plan(desired, current))
        self._note_written(name, desired, summary.errors)
        return summary

    def _note_written(self, name: str, desired: dict[Any, Any], errors: int) -> None:
        if errors:
            self._written.pop(name, None)  # some writes failed: read the map next time
        elif self._written.get(name) != desired:
            # An equal table keeps the dict it has: the new one (thousands of small objects for the dnat
            # table) goes at the end of the pass instead of scattering survivors through the heap (issue 15).
            self._written[name] = desired

    def _forget_flows(self, desired: DesiredState, unpublished: set[int], reread: bool) -> int:
        """Remove the conntrack pairs of container addresses that went and of mappings no longer
        published; at a full resync (`reread`), also every orphan (see the module docstring)."""
        owners = frozenset(desired.container_addrs)
        previous, self._owners = self._owners, owners
        gone = {addr for _, addr in previous - owners} if previous is not None else set()
        if not (gone or unpublished or reread):
            return 0
        conntrack = self._dp.conntrack
        try:
            if reread:
                owned = {addr for _, addr in owners} | {r.gateway for r in desired.routes if r.gateway is not None}
                removed = conntrack.forget(gone, unpublished, prefixes=[r.prefix for r in desired.routes],
                                           owned=owned, published=desired.mapping_ids)
            else:
                removed = conntrack.forget(gone, unpublished)
        except (OSError, V6natError) as exc:
            log.warning("forgetting the flows of removed containers failed: %s", exc)
            self._owners = previous  # the same addresses again next pass
            return 0
        if removed:
            log.debug("forgot %d flows (addresses gone: %s; mappings removed: %d%s)", removed,
                      ", ".join(sorted(map(str, gone))) or "none", len(unpublished),
                      "; resync" if reread else "")
        return removed

    def _attachments(self, desired: DesiredState, docker_known: bool) -> tuple[tuple[str, ...], tuple[str, ...], int]:
        """Attach our programs where missing (and once per interface per daemon, to load this build's
        programs over a previous daemon's); detach them where no longer wanted."""
        dp = self._dp
        current = dp.attached()
        # Interfaces that went away (a stopped container's veth) took our filters with them.
        self._replaced_once &= set(current)
        wanted = desired.interface_roles(docker_known)
        if not docker_known:  # Docker-derived attachments stay as they are until Docker answers
            wanted.update({name: role for name, role in current.items() if role in ("bridge", "veth")})
        attach = {"public": dp.attach_public, "bridge": dp.attach_bridge, "veth": dp.attach_veth}
        attached, detached, errors = [], [], 0
        for name, role in sorted(wanted.items()):
            if current.get(name) == role and name in self._replaced_once:
                continue
            try:
                attach[role](name)
                self._replaced_once.add(name)
                attached.append(name)
            except (OSError, V6natError) as exc:
                errors += 1
                log.warning("attaching to %s (%s) failed: %s", name, role, exc)
        for name in sorted(set(current) - set(wanted)):
            try:
                dp.detach(name)
                self._replaced_once.discard(name)
                detached.append(name)
            except (OSError, V6natError) as exc:
                errors += 1
                log.warning("detaching from %s failed: %s", name, exc)
        return tuple(attached), tuple(detached), errors
