"""The snapshot: every number v6nat exports, read at one time from the BPF maps and `ControlPlaneStats`.

`take_snapshot(dp, stats)` is what the Prometheus collector, `/status` and `v6nat status` all read,
so a person and Prometheus see the same figures. It reads the datapath only through the methods
listed in `DatapathReader`; readiness (`/readyz`) is decided here too.

Imports: stdlib, v6nat_ebpf.versions (bcc's version, without loading bcc), v6nat_ebpf.model (protocol names) and observe.stats.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Protocol

from v6nat_ebpf import __version__
from v6nat_ebpf.model import protocol_name
from v6nat_ebpf.versions import bcc_version
from v6nat_ebpf.observe.stats import ControlPlaneStats, ControlPlaneView, Histogram

# Datapath counter names (bpf/v6nat.h V6NAT_ACTIONS) that the snapshot sorts into translations and drops.
TRANSLATION_KINDS = ("dnat", "snat", "hairpin", "reverse")
PASS_COUNTER = "pass"
DROP_PREFIX = "drop_"
SNAT_EXHAUSTED_REASON = "ports_exhausted"


class DatapathReader(Protocol):
    """The read side of `v6nat_ebpf.datapath.Datapath` that metrics use."""

    def counters(self) -> dict[str, int]: ...
    def mapping_stats(self) -> dict[int, tuple[int, int, int]]: ...
    def bans_active(self) -> int: ...
    def map_fill(self, conntrack_entries: int | None = None) -> dict[str, tuple[int, int]]: ...
    def conntrack_summary(self) -> Any: ...  # ConntrackSummary: entries, flows, snat_ports
    def snat_allocations(self) -> Any: ...  # SnatAllocations: buckets (most tries, claims), tries
    def attached(self) -> dict[str, str]: ...
    def hostlocal_stats(self) -> dict[int, tuple[int, int]]: ...  # mapping id -> (connects, sendmsgs)
    def hostlocal_attachments(self) -> list[Any]: ...  # hostlocal.Attachment: program, cgroup_id
    @property
    def config(self) -> Any: ...  # DatapathConfig: snat_port_min, snat_port_max


@dataclass(frozen=True)
class BuildInfo:
    version: str
    kernel: str
    bcc_version: str


def build_info() -> BuildInfo:
    return BuildInfo(version=__version__, kernel=platform.release(), bcc_version=bcc_version())


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str  # one line; "ready" when ready


@dataclass(frozen=True)
class Snapshot:
    """Every number v6nat exports, read at one time. Counters are totals since the maps were created."""

    taken_at_s: float
    build: BuildInfo
    translations: Mapping[str, int]
    passed: int
    drops: Mapping[str, int]
    events: Mapping[str, int]  # every other datapath counter, by its name in bpf/v6nat.h
    mapping_traffic: Mapping[int, tuple[int, int, int]]  # mapping id -> (packets, bytes, policy drops); ids of control.mappings are exported
    conntrack_flows: Mapping[tuple[str, str, str], int]  # (protocol, kind, state) -> flows
    maps: Mapping[str, tuple[int, int]]  # map -> (entries, capacity)
    snat_ports_in_use: Mapping[str, int]  # protocol -> distinct (address, port) in use
    snat_pool_ports: int  # ports per SNAT address and protocol
    snat_allocation_tries: Histogram  # port claims by candidates tried; +Inf also holds the exhausted ones
    interfaces: Mapping[str, tuple[str, bool]]  # ifname -> (role, attached now)
    control: ControlPlaneView
    readiness: Readiness
    # host-local access: mapping id -> (connects, sendmsgs) the socket hooks sent to its container, and the
    # hooks attached now (program -> cgroup id; empty: off)
    hostlocal_calls: Mapping[int, tuple[int, int]] = field(default_factory=dict)
    hostlocal_hooks: Mapping[str, int] = field(default_factory=dict)
    bans_active: int = 0  # bans in force (v6nat ban)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (for `v6nat status --json` and `/status`)."""
        c = self.control
        return {
            "taken_at": self.taken_at_s,
            "build": vars(self.build),
            "ready": self.readiness.ready,
            "ready_reason": self.readiness.reason,
            "translations": dict(self.translations),
            "passed": self.passed,
            "drops": dict(self.drops),
            "snat": {
                "exhausted": self.drops.get(SNAT_EXHAUSTED_REASON, 0),
                "ports_in_use": dict(self.snat_ports_in_use),
                "pool_ports": self.snat_pool_ports,
                "allocation_tries": self.snat_allocation_tries.as_dict(),
            },
            "events": dict(self.events),
            "mappings": [
                {"mapping_id": mapping_id, **asdict(labels), "packets": packets, "bytes": octets,
                 "policy_drops": refused, "host_connects": connects, "host_sendmsgs": sendmsgs}
                for mapping_id, labels in sorted(c.mappings.items())
                for packets, octets, refused in (self.mapping_traffic.get(mapping_id, (0, 0, 0)),)
                for connects, sendmsgs in (self.hostlocal_calls.get(mapping_id, (0, 0)),)
            ],
            "policy": {
                "bans_active": self.bans_active,
                "errors": [dict(zip(("container", "network", "label", "value"), e)) for e in c.policy_errors],
            },
            "host_local": {
                "hooks": dict(sorted(self.hostlocal_hooks.items())),
                "connects": sum(c for c, _ in self.hostlocal_calls.values()),
                "sendmsgs": sum(s for _, s in self.hostlocal_calls.values()),
            },
            "conntrack_flows": [
                {"protocol": p, "kind": k, "state": s, "flows": n}
                for (p, k, s), n in sorted(self.conntrack_flows.items())
            ],
            "maps": {
                name: {"entries": e, "capacity": cap} for name, (e, cap) in sorted(self.maps.items())
            },
            "interfaces": {
                name: {"role": role, "attached": up} for name, (role, up) in sorted(self.interfaces.items())
            },
            "networks": [
                {"prefix": prefix, "network": name, "mode": mode}
                for prefix, (name, mode) in sorted(c.networks.items())
            ],
            "control_plane": {
                "docker_connected": c.docker_connected,
                "first_sync_done": c.first_sync_done,
                "last_resync": c.last_resync_s or None,
                "docker_events": dict(c.docker_events),
                "reconcile_seconds": c.reconcile.as_dict(),
                "map_write_errors": c.map_write_errors,
                "gc_runs": c.gc_runs,
                "gc_removed_flows": c.gc_removed,
            },
        }


def readiness(control: ControlPlaneView, attached: Mapping[str, str]) -> Readiness:
    """Ready = maps adopted, programs attached on every expected interface, first Docker sync done."""
    if not control.maps_adopted:
        return Readiness(False, "maps not adopted yet")
    if not control.expected_interfaces:
        return Readiness(False, "no interface to attach to yet")
    missing = sorted(set(control.expected_interfaces) - set(attached))
    if missing:
        return Readiness(False, "programs not attached on " + ", ".join(missing))
    if not control.first_sync_done:
        return Readiness(False, "first sync with Docker not done yet")
    return Readiness(True, "ready")


def take_snapshot(dp: DatapathReader, stats: ControlPlaneStats) -> Snapshot:
    """Read every figure now: the BPF maps (per-CPU summed by the datapath) and the control-plane facts."""
    control = stats.view()
    counters = dp.counters()
    translations = {kind: counters.get(kind, 0) for kind in TRANSLATION_KINDS}
    drops = {name[len(DROP_PREFIX):]: n for name, n in counters.items() if name.startswith(DROP_PREFIX)}
    known = {*TRANSLATION_KINDS, PASS_COUNTER}
    events = {name: n for name, n in counters.items() if name not in known and not name.startswith(DROP_PREFIX)}

    conntrack = dp.conntrack_summary()
    conntrack_flows = {(protocol_name(proto), kind, state): n for (proto, kind, state), n in conntrack.flows.items()}

    attached = dp.attached()
    interfaces = {name: (role, name in attached) for name, role in control.expected_interfaces.items()}
    interfaces.update({name: (role, True) for name, role in attached.items()})

    return Snapshot(
        taken_at_s=time.time(),
        build=build_info(),
        translations=translations,
        passed=counters.get(PASS_COUNTER, 0),
        drops=drops,
        events=events,
        mapping_traffic=dp.mapping_stats(),
        conntrack_flows=conntrack_flows,
        maps=dp.map_fill(conntrack_entries=conntrack.entries),
        snat_ports_in_use={protocol_name(proto): n for proto, n in conntrack.snat_ports.items()},
        snat_pool_ports=dp.config.snat_port_max - dp.config.snat_port_min + 1,
        snat_allocation_tries=allocation_tries(dp.snat_allocations(), drops.get(SNAT_EXHAUSTED_REASON, 0)),
        interfaces=interfaces,
        control=control,
        readiness=readiness(control, attached),
        hostlocal_calls=dp.hostlocal_stats(),
        hostlocal_hooks={a.program: a.cgroup_id for a in dp.hostlocal_attachments()},
        bans_active=dp.bans_active(),
    )


def allocation_tries(allocations: Any, exhausted: int) -> Histogram:
    """The datapath's SNAT port claims by tries needed (buckets counted apart) as a histogram; a claim that
    failed all its tries (the ports_exhausted drop) is an observation past the last bound, of that many tries."""
    cumulative, running = [], 0
    for most, claims in allocations.buckets:
        running += claims
        cumulative.append((float(most), running))
    last = allocations.buckets[-1][0]
    cumulative.append((float("inf"), running + exhausted))
    return Histogram(tuple(cumulative), float(allocations.tries + last * exhausted), running + exhausted)
