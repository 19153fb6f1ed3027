"""The Datapath: adopt the pinned programs and maps (building them first when
needed), attach to interfaces, and give typed access to the maps.

Maps are pinned under <pin_path>/v<LAYOUT_VERSION>/, the programs beside them
in progs-<build id>/. The build id is a hash of what went into the programs:
the sources, the compiler flags (pin directory and capacities), the kernel and
bcc. Compiling maps LLVM into a process for good (about 150 MB), so it happens
only in a short-lived child (`python -m v6nat_ebpf.datapath.build`), and only
when no programs of the current build id are pinned: a restart over matching
pins compiles nothing, and this process never loads bcc.

bcc reuses a pinned map without any check, so before compiling, every existing
pin is checked (type, key size, value size, max entries, flags) against
layout.py, which a test checks against the compiler: a mismatch is a one-line
V6natError (pins.py, where readers of the maps find the same checks). A pin
directory of another layout version is refused; `Datapath.cleanup` removes it.

Filters stay attached and maps stay pinned when the process exits: the
datapath keeps translating established flows while the daemon restarts, and
the next `Datapath.open` adopts the maps and atomically replaces the filters.

Imports datapath.{bpfsys,flowlist,hostlocal,layout,maps,pins,tc,trace}; bcc only in `build_programs`,
which runs in the child.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from v6nat_ebpf.constants import DEFAULT_PIN_PATH
from v6nat_ebpf.datapath import bpfsys, hostlocal, layout
from v6nat_ebpf.datapath.flowlist import CONNTRACK_TABLES, FlowRecord
from v6nat_ebpf.datapath.maps import (
    BansTable,
    Conntrack,
    ConntrackSummary,
    DatapathConfig,
    DnatTable,
    Flow,
    HostAddrsTable,
    NetworksTable,
    PolicyTable,
    PublicIfacesTable,
    SnatAllocations,
    VethsTable,
    config_from_raw,
    read_config,
    read_counters,
    read_hostlocal_stats,
    read_mapping_stats,
    read_snat_allocations,
    write_config,
)
from v6nat_ebpf.datapath.pins import check_pin_path, check_pinned_maps, open_maps, pin_dir, pinned_specs
from v6nat_ebpf.datapath.trace import Tracer
from v6nat_ebpf.errors import V6natError
from v6nat_ebpf.versions import bcc_version

log = logging.getLogger(__name__)

# role -> tc direction -> program (and filter) name
PROGRAMS = {
    "public": {"ingress": "v6nat_public_ingress", "egress": "v6nat_public_egress"},
    "bridge": {"ingress": "v6nat_bridge_ingress", "egress": "v6nat_bridge_egress"},
    # the host side of a container's veth on a managed network
    "veth": {"ingress": "v6nat_veth_ingress"},
}


# The program files, compiled as one bcc module: the TC programs, then the socket hooks (host-local access).
PROGRAM_FILES = ("v6nat.c", "sock.c")


def program_source() -> str:
    """The PROGRAM_FILES with their quoted includes inlined (with #line markers,
    so compiler messages name the real files): bcc rewrites map calls only in
    the main file, and the programs' helpers live in headers."""
    seen: set[Path] = set()

    def expand(path: Path) -> list[str]:
        lines = [f'#line 1 "{path}"']
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = re.match(r'\s*#include\s+"([^"]+)"', line)
            if not match:
                lines.append(line)
                continue
            included = layout.BPF_DIR / match.group(1)
            if included not in seen:
                seen.add(included)
                lines += expand(included)
            lines.append(f'#line {number + 1} "{path}"')
        return lines

    return "\n".join(line for name in PROGRAM_FILES for line in expand(layout.BPF_DIR / name)) + "\n"


def cflags(pins: Path, config: DatapathConfig) -> list[str]:
    """What the compiler is told besides the sources: where the maps are pinned and their capacities."""
    return [
        f'-DV6NAT_PIN_DIR="{pins}"',
        f"-DV6NAT_CT_MAX={config.conntrack_max}",
        f"-DV6NAT_DNAT_MAX={config.dnat_max}",
        f"-DV6NAT_CT_UNASSURED_MAX={layout.ct_unassured_max(config.conntrack_max)}",
    ]


def build_id(pins: Path, config: DatapathConfig) -> str:
    """A hash of everything the compiled programs depend on: sources, flags, kernel (release and
    build), bcc. Programs pinned under this id are what compiling now would produce."""
    uname = os.uname()
    digest = hashlib.sha256()
    for part in (program_source(), *cflags(pins, config), uname.release, uname.version, bcc_version()):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def progs_dir(pins: Path, build: str) -> Path:
    return pins / f"progs-{build}"


def program_names() -> list[str]:
    """The TC programs: every build has them (the socket hooks only where the kernel takes them)."""
    return [name for role in PROGRAMS.values() for name in role.values()]


def build_programs(pin_path: Path, config: DatapathConfig) -> str:
    """Compile bpf/ with bcc, create (or reuse) the pinned maps, load the programs and pin them
    under progs-<build id>/; older builds' program pins go (attached filters keep their programs).
    Runs in the short-lived child of `Datapath.open`. Returns the build id."""
    from bcc import BPF  # only here: the long-lived daemon never maps LLVM

    pins = pin_dir(pin_path)
    build = build_id(pins, config)
    started = time.monotonic()
    try:
        bpf = BPF(text=program_source().encode(), cflags=cflags(pins, config))
    except Exception as exc:  # bcc raises bare Exception; details went to stderr
        raise V6natError(f"cannot compile bpf/v6nat.c with bcc: {exc}") from exc
    staging = pins / f"staging-{build}"  # bpffs refuses names with a dot
    try:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
        for name in program_names():
            bpfsys.obj_pin(bpf.load_func(name.encode(), BPF.SCHED_CLS).fd, str(staging / name))
        for name, attach_type in hostlocal.PROGRAMS.items():
            try:
                fd = bpf.load_func(name.encode(), BPF.CGROUP_SOCK_ADDR, attach_type=attach_type).fd
            except Exception as exc:  # bcc raises bare Exception; the verifier's log went to stderr
                # Only host-local access needs them: without the pin, attaching them says why.
                log.warning("socket hook %s not loaded (host-local access unavailable): %s", name, exc)
                continue
            bpfsys.obj_pin(fd, str(staging / name))
    except V6natError:
        raise
    except Exception as exc:
        raise V6natError(f"cannot load the TC programs: {exc}") from exc
    finally:
        bpf.cleanup()
    final = progs_dir(pins, build)
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    for old in [*pins.glob("progs-*"), *pins.glob("staging-*")]:  # other builds, and builds cut short
        if old != final:
            shutil.rmtree(old)
    log.info("datapath compiled and pinned in %.1f s (build %s)", time.monotonic() - started, build)
    return build


def run_build(pin_path: Path, config: DatapathConfig) -> None:
    """`build_programs` in a child process, so that LLVM leaves with it (-P: never modules from
    the working directory). Its one-line error becomes ours; what the compiler said before it
    goes on to stderr."""
    argv = [sys.executable, "-P", "-m", "v6nat_ebpf.datapath.build", "--pin-path", str(pin_path),
            "--conntrack-max", str(config.conntrack_max), "--dnat-max", str(config.dnat_max)]
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    if result.returncode == 0:
        sys.stderr.write(result.stderr)  # warnings, e.g. a socket hook this kernel refused
        return
    lines = result.stderr.rstrip().splitlines() or [f"exit status {result.returncode}"]
    if len(lines) > 1:
        sys.stderr.write("\n".join(lines[:-1]) + "\n")
    raise V6natError(lines[-1].removeprefix("v6nat: error: "))


def pinned_conntrack_max(pin_path: str | Path) -> int | None:
    """The capacity of the conntrack map pinned under `pin_path` (this layout), None when there is none."""
    path = pin_dir(Path(pin_path)) / "conntrack"
    if not path.exists():
        return None
    fd = bpfsys.obj_get(str(path))
    try:
        return bpfsys.map_info(fd).max_entries
    finally:
        os.close(fd)


def _open_programs(progs: Path) -> dict[str, int]:
    """The pinned programs of one build: every TC program, the socket hooks that loaded."""
    fds: dict[str, int] = {}
    try:
        for name in program_names():
            fds[name] = bpfsys.obj_get(str(progs / name))
        for name in hostlocal.PROGRAMS:
            if (progs / name).exists():
                fds[name] = bpfsys.obj_get(str(progs / name))
    except V6natError:
        for fd in fds.values():
            os.close(fd)
        raise
    return fds


class Datapath:
    """The pinned programs (if opened), the pinned maps, and the filters of one netns."""

    def __init__(self, pin_path: Path, specs: dict[str, layout.MapSpec], maps: dict[str, bpfsys.BpfMap],
                 prog_fds: dict[str, int] | None = None, netns: str | None = None) -> None:
        self.pin_path = pin_path
        self.netns = netns
        self.specs = specs
        self._maps = maps
        self._prog_fds = dict(prog_fds or {})
        self.dnat = DnatTable(maps["dnat"], [maps["mapping_stats"], maps["hostlocal_stats"]])
        self.networks = NetworksTable(maps["networks"])
        self.public_ifaces = PublicIfacesTable(maps["public_ifaces"])
        self.host_addrs = HostAddrsTable(maps["host_addrs"])
        self.veths = VethsTable(maps["veths"])
        self.conntrack = Conntrack([maps[name] for name in CONNTRACK_TABLES], maps["config"])
        self.policy = PolicyTable(maps["policy"])
        self.bans = BansTable(maps["bans"], maps["ban_state"])

    @classmethod
    def open(cls, pin_path: str | Path = DEFAULT_PIN_PATH, config: DatapathConfig | None = None,
             netns: str | None = None) -> Datapath:
        """Adopt the pinned programs of the current build and the pinned maps (after checking
        them); when no programs of this build are pinned, build them first in a child process
        (maps are created then if missing). Writes `config`."""
        config = config or DatapathConfig()
        pin_path = Path(pin_path)
        check_pin_path(pin_path)
        pins = pin_dir(pin_path)
        specs = layout.map_specs(config.conntrack_max, config.dnat_max)
        check_pinned_maps(pins, specs)
        started = time.monotonic()
        progs = progs_dir(pins, build_id(pins, config))
        built = not progs.is_dir()
        if built:
            pins.mkdir(parents=True, exist_ok=True)
            run_build(pin_path, config)
        prog_fds = _open_programs(progs)
        try:
            dp = cls(pin_path, specs, open_maps(pins, specs), prog_fds, netns)
        except BaseException:
            for fd in prog_fds.values():
                os.close(fd)
            raise
        log.info("datapath %s in %.2f s: maps at %s, programs %s", "compiled and loaded" if built else "adopted",
                 time.monotonic() - started, pins, progs.name)
        dp.set_config(config)
        return dp

    @classmethod
    def open_pinned(cls, pin_path: str | Path = DEFAULT_PIN_PATH, netns: str | None = None) -> Datapath:
        """The pinned maps of a running datapath, without compiling anything
        (for `v6nat status`, `flows`, metrics)."""
        pins, specs = pinned_specs(pin_path)
        return cls(Path(pin_path), specs, open_maps(pins, specs), None, netns)

    def close(self) -> None:
        """Close our fds; filters and pins stay (see the module docstring)."""
        for m in self._maps.values():
            m.close()
        for fd in self._prog_fds.values():
            os.close(fd)
        self._prog_fds = {}

    def __enter__(self) -> Datapath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def prog_fd(self, name: str) -> int:
        """The fd of a loaded program, e.g. "v6nat_public_ingress"."""
        if name not in self._prog_fds:
            raise V6natError(f"program {name} is not open (maps-only Datapath?)")
        return self._prog_fds[name]

    # interfaces

    def _attach(self, ifname: str, role: str) -> None:
        from v6nat_ebpf.datapath import tc  # netlink: not for the readers (status, flows)

        with tc.Tc(self.netns) as t:
            for direction, name in PROGRAMS[role].items():
                t.attach(ifname, direction, self.prog_fd(name), name)

    def attach_public(self, ifname: str) -> None:
        """Attach (or atomically replace) the public programs on `ifname`."""
        self._attach(ifname, "public")

    def attach_bridge(self, ifname: str) -> None:
        """Attach (or atomically replace) the bridge program on `ifname`."""
        self._attach(ifname, "bridge")

    def attach_veth(self, ifname: str) -> None:
        """Attach (or atomically replace) the veth program on the host side of a
        container's veth: the fast path of the container's established flows,
        and container to container drops on networks with icc=False."""
        self._attach(ifname, "veth")

    def detach(self, ifname: str) -> None:
        """Remove our filters from `ifname`; other filters stay."""
        from v6nat_ebpf.datapath import tc

        with tc.Tc(self.netns) as t:
            t.detach(ifname)

    def attached(self) -> dict[str, str]:
        """ifname -> "public" | "bridge" | "veth", read from the kernel's filters."""
        from v6nat_ebpf.datapath import tc

        roles = {name: role for role, progs in PROGRAMS.items() for name in progs.values()}
        with tc.Tc(self.netns) as t:
            return {f.ifname: roles[f.name] for f in t.ours() if f.name in roles}

    # host-local access (datapath/hostlocal.py)

    def _sock_prog_fd(self, name: str, attach_type: int) -> int:
        """A socket hook of the pinned build (`attach_type` was given when it was loaded, in the build)."""
        if name not in self._prog_fds:
            if not self._prog_fds:
                raise V6natError(f"program {name} is not loaded (maps-only Datapath?)")
            raise V6natError(f"cannot load the socket hook {name}: the kernel refused it when the programs "
                             "were built (`v6nat check` says why)")
        return self._prog_fds[name]

    def attach_hostlocal(self, cgroup: str | Path, netns_cookie: int) -> None:
        """Translate host-local connects and sends to published ports for sockets of the network
        namespace with `netns_cookie`, in `cgroup` (a cgroup v2 directory) and below."""
        hostlocal.write_netns_cookie(self._maps["hostlocal_config"], netns_cookie)
        hostlocal.attach(pin_dir(self.pin_path), Path(cgroup), self._sock_prog_fd)

    def detach_hostlocal(self) -> list[str]:
        """Remove the socket hooks (no-op when there are none); what was removed."""
        hostlocal.write_netns_cookie(self._maps["hostlocal_config"], 0)
        return hostlocal.detach(pin_dir(self.pin_path))

    def hostlocal_attachments(self) -> list[hostlocal.Attachment]:
        return hostlocal.attachments(pin_dir(self.pin_path))

    def hostlocal_stats(self) -> dict[int, tuple[int, int]]:
        """mapping_id -> (connects, sendmsgs) translated by the socket hooks, over every CPU."""
        return read_hostlocal_stats(self._maps["hostlocal_stats"])

    # maps

    def set_config(self, config: DatapathConfig) -> None:
        """Timeouts and the SNAT port range, effective for the next packet
        (capacities are compiled in: changing them needs a cleanup)."""
        write_config(self._maps["config"], config)

    @property
    def config(self) -> DatapathConfig:
        """The settings in force: the config map, and the compiled-in capacities."""
        return config_from_raw(read_config(self._maps["config"]), self.specs["conntrack"].max_entries,
                               self.specs["dnat"].max_entries)

    def flows(self) -> list[Flow]:
        return self.conntrack.flows()

    def flow_records(self, now_ns: int | None = None) -> Iterator[FlowRecord]:
        """The flows as flat tuples with raw addresses (flowlist.FlowRecord), for listing many (`v6nat flows`)."""
        return self.conntrack.flow_records(now_ns)

    def conntrack_summary(self) -> ConntrackSummary:
        """Flow counts by (proto, kind, state), SNAT ports in use and the number
        of conntrack entries, without a Flow per pair (metrics, status)."""
        return self.conntrack.summary()

    def gc(self, now_ns: int | None = None) -> int:
        """Remove expired conntrack pairs; `now_ns` is CLOCK_MONOTONIC."""
        return self.conntrack.gc(now_ns)

    def counters_by_hook(self) -> dict[str, dict[str, int]]:
        return read_counters(self._maps["counters"])

    def counters(self) -> dict[str, int]:
        """Counter name -> packets over every hook and CPU; every name present."""
        total: dict[str, int] = {}
        for per_hook in self.counters_by_hook().values():
            for name, value in per_hook.items():
                total[name] = total.get(name, 0) + value
        return total

    def mapping_stats(self) -> dict[int, tuple[int, int, int]]:
        """mapping_id -> (packets, bytes, new flows refused by its source rules) over every CPU."""
        return read_mapping_stats(self._maps["mapping_stats"])

    def bans_active(self) -> int:
        """Bans in force now (expired ones may stay in the map until the next `v6nat ban`)."""
        return self.bans.active(time.clock_gettime_ns(time.CLOCK_BOOTTIME))

    def tracer(self) -> Tracer:
        """`v6nat trace`'s access to the trace maps (see datapath/trace.py)."""
        return Tracer(self._maps["trace_filter"], self._maps["trace_state"], self._maps["trace_events"].fd)

    def snat_allocations(self) -> SnatAllocations:
        """Successful SNAT/hairpin port claims by tries needed (buckets 1, 2-3, 4-7, 8-16)."""
        return read_snat_allocations(self._maps["snat_tries"])

    def map_fill(self, conntrack_entries: int | None = None) -> dict[str, tuple[int, int]]:
        """Map name -> (entries, capacity). `conntrack_entries`: the count a
        conntrack_summary() of the same scrape found, so conntrack is not read twice."""
        out = {}
        for name, spec in self.specs.items():
            if spec.type == layout.RINGBUF:
                continue  # bytes in flight, not entries
            if spec.type in (layout.ARRAY, layout.PERCPU_ARRAY):
                entries = spec.max_entries
            elif name == "conntrack" and conntrack_entries is not None:
                # the summary counted both tables' halves
                entries = conntrack_entries - self._maps["ct_unassured"].count()
            else:
                entries = self._maps[name].count()
            out[name] = (entries, spec.max_entries)
        return out

    @staticmethod
    def cleanup(pin_path: str | Path = DEFAULT_PIN_PATH, netns: str | None = None) -> list[str]:
        """Detach our filters from every interface of the netns and remove our
        pins (every layout version); nothing else. Returns what was removed."""
        from v6nat_ebpf.datapath import tc

        removed = []
        with tc.Tc(netns) as t:
            ours = t.ours()
            for ifname in sorted({f.ifname for f in ours}):
                t.detach(ifname)
            removed += [f"filter {f.name} on {f.ifname} {f.direction}" for f in ours]
        pin_path = Path(pin_path)
        if pin_path.is_dir():
            for entry in sorted(pin_path.iterdir()):
                if entry.is_dir() and re.fullmatch(r"v\d+", entry.name):
                    removed += hostlocal.detach(entry)  # detached even if a process still holds a link
                    shutil.rmtree(entry)
                    removed.append(f"pins {entry}")
            if not any(pin_path.iterdir()):
                pin_path.rmdir()
        return removed
