"""A fuzz campaign: worker processes (one per core by default), each in its
own network namespace with its own compiled datapath and pin path, sending
generated packets through every program with BPF_PROG_TEST_RUN (repeat=1)
and judging each output with the model. The results are merged into one
report (figures, violations with hex reproducers).

Between packets the world is kept as the model knows it: the conntrack keys
a new flow wrote are removed (or given their old value back, with their
pair's other half), and every SWEEP packets both conntrack tables (answered
or assured flows, and the others) are swept
(keys the model did not expect, or in the other table, are removed and
counted as strays) and the base flows written back to their tables.
"""

from __future__ import annotations

import ctypes as ct
import multiprocessing as mp
import os
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field

from . import world as W
from v6nat_ebpf.lab.testrun import SkBuffCtx

from .gen import Generator
from .model import DEFAULT_RULES, RULESETS, FlowState, Model, ct_key

SWEEP = 256
SAMPLES_PER_CATEGORY = 5


@dataclass
class Report:
    packets: int = 0
    elapsed_s: float = 0.0
    setup_s: float = 0.0
    workers: int = 0
    rules: str = ""
    per_prog: dict = field(default_factory=dict)  # prog -> Counter(outcome)
    per_family: dict = field(default_factory=dict)  # family -> Counter(outcome)
    tags: Counter = field(default_factory=Counter)
    violations: Counter = field(default_factory=Counter)
    samples: dict = field(default_factory=dict)  # category -> [sample]
    errors: Counter = field(default_factory=Counter)
    csum_checked: int = 0
    strays: int = 0
    unrunnable: int = 0
    counters: dict = field(default_factory=dict)  # hook -> Counter(counter)
    base_halves: int = 0
    base_not_in_first: int = 0  # base halves outside `conntrack` (in the unassured/unreplied table)

    def merge(self, o: "Report") -> None:
        self.packets += o.packets
        self.elapsed_s = max(self.elapsed_s, o.elapsed_s)
        self.setup_s = max(self.setup_s, o.setup_s)
        self.workers += o.workers
        self.rules = o.rules
        for mine, theirs in ((self.per_prog, o.per_prog), (self.per_family, o.per_family),
                             (self.counters, o.counters)):
            for k, c in theirs.items():
                mine.setdefault(k, Counter()).update(c)
        self.tags.update(o.tags)
        self.violations.update(o.violations)
        for cat, s in o.samples.items():
            mine = self.samples.setdefault(cat, [])
            mine += s[:max(0, SAMPLES_PER_CATEGORY - len(mine))]
        self.errors.update(o.errors)
        self.csum_checked += o.csum_checked
        self.strays += o.strays
        self.unrunnable += o.unrunnable
        self.base_halves = max(self.base_halves, o.base_halves)
        self.base_not_in_first = max(self.base_not_in_first, o.base_not_in_first)

    @property
    def failures(self) -> int:
        return sum(self.violations.values()) + sum(self.errors.values())


def _kbuf(kb: bytes):
    return ct.create_string_buffer(kb, len(kb))


class World:
    """The loaded datapath with the world's maps and base flows (in this netns)."""

    def __init__(self, tag: str, rules_name: str) -> None:
        from v6nat_ebpf.datapath import Datapath

        self.rules = RULESETS[rules_name]
        self.pin = W.pin_path_for(tag)
        self.dp = None
        try:
            self.dp = Datapath.open(self.pin, W.CONFIG)
            W.configure(self.dp)
            W.setup_flows(self.dp)
        except BaseException:
            self.close()
            raise
        if self.rules.ct_maps[0] not in self.dp._maps:
            raise RuntimeError(f"the datapath has no {self.rules.ct_maps[0]} map")
        self.ct_maps = [self.dp._maps[n] for n in self.rules.ct_maps if n in self.dp._maps]
        items, tables = [], {}
        for i, m in enumerate(self.ct_maps):
            for kb, vb in m.items():
                items.append((kb, vb))
                tables[kb] = i
        self.flows = FlowState(items, tables)
        self.fds = {p: self.dp.prog_fd(p) for p in W.PROGRAMS}
        self.ctx = {}
        for name, ifindex in W.IFINDEX.items():
            c = SkBuffCtx()
            c.ifindex = ifindex
            self.ctx[name] = bytes(c) if ifindex != 1 else None
        self._base = []  # per table: (keys, values, count) for a batch update
        for i in range(len(self.ct_maps)):
            keys = [k for k in self.flows.raw if self.flows.table[k] == i]
            self._base.append((b"".join(keys), b"".join(self.flows.raw[k] for k in keys), len(keys)))
        # each base half's pair: the other half's key
        self._pair = {}
        for k, h in self.flows.halves.items():
            mk = ct_key(h.daddr, h.saddr, h.dport, h.sport, k[36])
            if mk in self.flows.raw:
                self._pair[k] = mk

    def close(self) -> None:
        if self.dp is not None:
            self.dp.close()
            self.dp = None
        W.remove_pins(self.pin)

    def undo(self, keys: list[bytes]) -> None:
        """Remove what a new flow wrote; a base key it took (a restarted flow)
        gets its pair back, in its own table."""
        restore = set()
        for kb in keys:
            if kb in self.flows.raw:
                restore.add(kb)
                if kb in self._pair:
                    restore.add(self._pair[kb])
            else:
                for m in self.ct_maps:
                    m.delete(_kbuf(kb))
        for kb in restore:
            home = self.flows.table[kb]
            for i, m in enumerate(self.ct_maps):
                if i == home:
                    m.update(_kbuf(kb), self.flows.raw[kb])
                else:
                    m.delete(_kbuf(kb))

    def present(self, kb: bytes) -> bool:
        return any(m.lookup(_kbuf(kb)) is not None for m in self.ct_maps)

    def sweep(self) -> int:
        strays = 0
        for i, m in enumerate(self.ct_maps):
            for kb, _ in m.items():
                if kb not in self.flows.raw:
                    strays += 1
                    m.delete(_kbuf(kb))
                elif self.flows.table[kb] != i:  # a restarted base flow, not yet answered
                    m.delete(_kbuf(kb))
        for m, (keys, values, n) in zip(self.ct_maps, self._base):
            if n:
                m.update_batch(keys, values, n)
        return strays


def run_worker(index: int, seed: int, packets: int, rules_name: str, deadline_s: float | None = None,
               tag: str | None = None, private_netns: bool = True) -> Report:
    from v6nat_ebpf.datapath.bpfsys import prog_test_run

    rep = Report(workers=1, rules=rules_name)
    started = time.monotonic()
    if private_netns:
        W.enter_private_netns()
    socks = W.open_host_sockets()
    try:
        world = World(tag or f"{os.getpid()}-w{index}", rules_name)
    except BaseException as exc:
        rep.errors[f"load: {exc}"[:300]] += 1
        return rep
    try:
        rep.setup_s = time.monotonic() - started
        rep.base_halves = len(world.flows.raw)
        rep.base_not_in_first = sum(1 for t in world.flows.table.values() if t)
        model = Model(world.rules, world.flows)
        gen = Generator(seed, world.flows)
        per_prog = {p: Counter() for p in W.PROGRAMS}
        per_family: dict[str, Counter] = {}
        t0 = time.monotonic()
        for i in range(packets):
            if i % SWEEP == SWEEP - 1:
                rep.strays += world.sweep()
                if deadline_s is not None and time.monotonic() - t0 > deadline_s:
                    break
            prog, buf, family, tags, iface = gen.next()
            rep.packets += 1
            rep.tags.update(tags)
            if not runnable(buf):
                rep.unrunnable += 1
                continue
            try:
                res = prog_test_run(world.fds[prog], buf, world.ctx[iface])
            except OSError as exc:
                rep.errors[f"{prog}: {exc}"] += 1
                _sample(rep, "test_run_error", prog, family, tags, None, buf, b"", str(exc), iface)
                continue
            v = model.judge(prog, iface, buf, res.data, res.retval)
            per_prog[prog][v.outcome] += 1
            per_family.setdefault(family, Counter())[v.outcome] += 1
            rep.csum_checked += v.csum_checked
            for cat, detail in v.violations:
                rep.violations[cat] += 1
                _sample(rep, cat, prog, family, tags, res.retval, buf, res.data, detail, iface)
            if v.created:
                world.undo(v.created)
            keep = model.must_keep(prog, buf)
            if keep and not all(world.present(k) for k in keep):
                cat = "closed_flow_deleted_by_bad_csum"
                rep.violations[cat] += 1
                _sample(rep, cat, prog, family, tags, res.retval, buf, res.data,
                        "a TCP packet with a wrong checksum removed a live flow's pair (the flow was closed by FINs "
                        "or a RST earlier in this sweep: replay those first)", iface)
                world.undo(keep)
        rep.elapsed_s = time.monotonic() - t0
        rep.per_prog = {p: c for p, c in per_prog.items()}
        rep.per_family = per_family
        for hook, values in world.dp.counters_by_hook().items():
            rep.counters[hook] = Counter({k: n for k, n in values.items() if n})
    except BaseException:
        rep.errors["harness: " + traceback.format_exc(limit=3)[-300:]] += 1
    finally:
        world.close()
        for s in socks:
            s.close()
    return rep


def runnable(buf: bytes) -> bool:
    """BPF_PROG_TEST_RUN refuses (EINVAL) a frame shorter than its Ethernet
    header, or than the IPv6 (IPv4) header its ethertype announces."""
    et = buf[12:14]
    return len(buf) >= (54 if et == b"\x86\xdd" else 34 if et == b"\x08\x00" else 14)


def _sample(rep: Report, cat: str, prog: str, family: str, tags: list, verdict, inp: bytes, out: bytes,
            detail: str, iface: str) -> None:
    s = rep.samples.setdefault(cat, [])
    if len(s) < SAMPLES_PER_CATEGORY:
        s.append({"prog": prog, "iface": iface, "family": family, "tags": tags, "verdict": verdict,
                  "detail": detail, "in": inp.hex(), "out": out.hex()})


def _worker_entry(args) -> Report:
    try:
        return run_worker(*args)
    except BaseException:
        rep = Report(workers=1, rules=args[3])
        rep.errors["worker: " + traceback.format_exc(limit=3)[-300:]] += 1
        return rep


def run_campaign(packets: int, jobs: int | None = None, seed: int = 1, rules: str = DEFAULT_RULES,
                 deadline_s: float | None = None) -> Report:
    """Split `packets` over `jobs` forked workers; every worker removes its pins."""
    jobs = jobs or os.cpu_count() or 1
    share = [packets // jobs + (1 if i < packets % jobs else 0) for i in range(jobs)]
    token = f"{os.getpid()}-{int(time.time())}"
    args = [(i, seed * 1000 + i, share[i], rules, deadline_s, f"{token}-w{i}") for i in range(jobs)]
    started = time.monotonic()
    total = Report(rules=rules)
    ctx = mp.get_context("fork")
    with ctx.Pool(jobs, maxtasksperchild=1) as pool:
        for rep in pool.imap_unordered(_worker_entry, args):
            total.merge(rep)
    # A worker killed before its finally: its pins still go.
    for a in args:
        W.remove_pins(W.pin_path_for(a[5]))
    total.elapsed_s = time.monotonic() - started
    return total


def format_report(rep: Report) -> str:
    lines = []
    add = lines.append
    add(f"fuzz: {rep.packets:,} packets, {rep.workers} workers, rules '{rep.rules}', "
        f"{rep.elapsed_s:.1f} s elapsed (setup {rep.setup_s:.1f} s), "
        f"{rep.packets / max(rep.elapsed_s, 1e-9):,.0f} packets/s")
    add(f"base flows: {rep.base_halves} conntrack halves ({rep.base_not_in_first} outside `conntrack`); "
        f"strays swept: {rep.strays}; "
        f"not runnable (IPv6 frame < 54 B, refused by BPF_PROG_TEST_RUN): {rep.unrunnable}")
    add("per program (outcome by the model):")
    for prog in W.PROGRAMS:
        c = rep.per_prog.get(prog, Counter())
        add(f"  {prog:22s} {sum(c.values()):>9,}  " + ", ".join(f"{k} {n:,}" for k, n in c.most_common()))
    add("per template family:")
    for fam, c in sorted(rep.per_family.items()):
        add(f"  {fam:22s} {sum(c.values()):>9,}  " + ", ".join(f"{k} {n:,}" for k, n in c.most_common()))
    add("mutations: " + ", ".join(f"{k} {n:,}" for k, n in rep.tags.most_common()))
    translated = sum(n for c in rep.per_prog.values() for k, n in c.items()
                     if k not in ("untouched", "dropped", "illegal", "redirect_untranslated", "bad_verdict", "resized"))
    add(f"translations allowed by the model: {translated:,} (checksums checked on {rep.csum_checked:,})")
    add("datapath counters (drops by reason, actions), per hook:")
    for hook, c in sorted(rep.counters.items()):
        drops = {k: n for k, n in c.items() if k.startswith("drop_")}
        acts = {k: n for k, n in c.items() if not k.startswith("drop_")}
        add(f"  {hook:15s} drops: " + (", ".join(f"{k[5:]} {n:,}" for k, n in sorted(drops.items())) or "none"))
        add(f"  {'':15s} actions: " + ", ".join(f"{k} {n:,}" for k, n in sorted(acts.items())))
    csum = sum(n for k, n in rep.violations.items() if k.startswith("csum"))
    model = sum(n for k, n in rep.violations.items() if not k.startswith("csum"))
    add(f"checksum failures: {csum:,}; model violations: {model:,}; errors: {sum(rep.errors.values()):,}")
    for k, n in rep.violations.most_common():
        add(f"  violation {k}: {n:,}")
    for k, n in rep.errors.most_common():
        add(f"  error {k}: {n:,}")
    for cat, samples in sorted(rep.samples.items()):
        add(f"samples of {cat}:")
        for s in samples[:3]:
            add(f"  {s['prog']} on {s['iface']} family={s['family']} tags={s['tags']} verdict={s['verdict']}: "
                f"{s['detail']}")
            add(f"    (replay: python -m tests.fuzz.replay {s['prog']} <in> {rep.rules} {s['iface']})")
            add(f"    in  {s['in']}")
            add(f"    out {s['out']}")
    return "\n".join(lines)
