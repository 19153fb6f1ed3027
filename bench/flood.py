"""`python -m bench.flood`: legitimate clients and established flows during a spoofed SYN flood.

What lives here: one job, the "Performance stays" flood figure of issue 12. In ONE
lab (the bench's own: client netns, host netns with dockerd and v6nat, the nginx
server container published on 8080, as bench/systems.py builds it), v6nat runs
with a small conntrack (`--conntrack-max`), then:

  1. `--idle` TCP connections to the published port each get one answer, then stay
     idle until the flood is over;
  2. one busy keep-alive connection asks for a page every few ms from before the
     baseline until after the flood (any error, or a gap over 1 s, counts);
  3. the legitimate new-connection rate (`wrk -c16`, `Connection: close`, as
     bench/load.py) is measured without flood, then during a flood of spoofed-source
     TCP SYNs (random sources in 2001:db8::/32 outside the lab's link, random
     ports) toward the published port, and once more after it; a probe client
     opens connections one by one meanwhile (success = answered within 1 s);
  4. after the flood: which idle connections still have their conntrack halves,
     then a request on each (answered or not).

The flood: `--factor` x conntrack_max SYNs at least (more when `--flood-pps` over
the flood's duration asks for more), precomputed frames written by `--senders`
processes on an AF_PACKET socket of the client netns in a tight, paced loop; every
frame has another source, the same valid TCP checksum. Bounded in count and time;
the lab, daemon and senders are torn down on any failure (SIGTERM, SIGALRM too).

Output: a table on stdout and bench/results/flood-<stamp>.json (+ flood-latest.json).
Exit 0 when measured (whatever the verdict; --check: 1 when a target is missed),
2 when the run failed.

Examples:
  sudo make bench-flood                                   # about 1 min
  sudo .venv/bin/python -m bench.flood --conntrack-max 16384 --factor 3 --seconds 5
  sudo .venv/bin/python -m bench.flood --flood-pps 0      # the flood as fast as the sender goes
  sudo .venv/bin/python -m bench.flood --flood-pps 0 --senders 2 --after-wait 35   # rates once SYN-ACKs stop
  sudo .venv/bin/python -m bench.flood --server-drops-flood   # control: a flood nobody answers
  sudo .venv/bin/python -m bench.flood --quick --results-dir /tmp/r   # < 60 s, what the smoke test runs
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

from bench import load
from bench.systems import HTTP_HOST_PORT, NGINX_CONF, REPO, V6nat, write_configs
from v6nat_ebpf.lab.daemon import V6NAT, LabDaemon
from v6nat_ebpf.lab.datapath import ct_half

log = logging.getLogger("bench.flood")

RESULTS_DIR = REPO / "bench" / "results"
# The lab's link is 2001:db8:1::/64 (and 2001:db8:2::/64 when routed): flood sources
# are 2001:db8:<0x0100..0xffff>:...; the third group keeps them off both.
SPOOF_GROUP3_MIN = 0x0100
ETH_P_IPV6 = 0x86DD
FRAME_LEN = 14 + 40 + 20  # Ethernet, IPv6, TCP without options
# nginx's default keepalive_timeout (75 s) would close the idle connections itself.
KEEPALIVE_TIMEOUT = "keepalive_timeout 600s;"
IDLE_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
PROBE_TIMEOUT_S = 1.0
UNPACED_PPS_MAX = 120_000  # frames per second and sender prepared for an unpaced flood
BUSY_TIMEOUT_S = 2.0
BUSY_GAP_S = 1.0  # a busy flow answering nothing for this long "broke", even if it recovers
TARGET_RATE_RATIO = 0.5


@dataclass(frozen=True)
class Plan:
    mode: str = "full"
    conntrack_max: int = 16384
    factor: float = 3.0          # the flood sends at least factor x conntrack_max SYNs
    flood_pps: int = 20_000      # 0: as fast as the senders go
    senders: int = 1
    seconds: int = 5             # each wrk run
    lead_s: float = 1.5          # flood before the during-flood measurement starts
    idle: int = 20
    after_wait_s: float = 0.5    # between the flood's end and the checks after it
    server_drops_flood: bool = False  # control: the server's netns drops the flood, so it stays unassured
    connections: int = 16
    busy_interval_s: float = 0.005
    max_run_s: int = 280         # SIGALRM: the whole run, lab included


QUICK = Plan(mode="quick", conntrack_max=4096, seconds=2, lead_s=0.7, idle=8, max_run_s=100)


class FloodError(RuntimeError):
    """The run could not be carried out."""


def _alarm(signum: int, frame: Any) -> None:
    raise TimeoutError("bench.flood ran over its time bound (--max-run-s)")


# ---------------------------------------------------------------- the system

class FloodedV6nat(V6nat):
    """bench.systems.V6nat, its daemon with a small conntrack."""

    conntrack_max = 16384

    def before_server(self) -> None:
        if not Path(V6NAT).exists():
            raise FloodError(f"{V6NAT} is missing (run scripts/setup)")
        self.daemon = LabDaemon(self.lab, extra=(f"--conntrack-max={self.conntrack_max}",), log_level="info",
                                log_dir=self.conf_dir.parent)
        self.stack.callback(self.daemon.close)
        self.daemon.start(wait_ready=False)


# ---------------------------------------------------------------- the flood frames

def _csum_add(total: int, words: bytes) -> int:
    for (w,) in struct.iter_unpack("!H", words):
        total += w
    return total


def tcp_checksum(src: bytes, dst: bytes, segment: bytes) -> int:
    total = _csum_add(0, src + dst + struct.pack("!IxxxB", len(segment), 6) + segment)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def syn_frames(count: int, dst_mac: bytes, src_mac: bytes, dst: IPv6Address, dport: int, seed: int = 0) -> bytes:
    """`count` SYN frames back to back (FRAME_LEN each), every one from another source in
    2001:db8:<SPOOF_GROUP3_MIN..>::/48s with a random source port and sequence number, all
    with the same valid TCP checksum: the last source group compensates the others (the
    one's complement sum of the varied words stays the template's)."""
    import random

    rng = random.Random(seed)
    src0 = IPv6Address("2001:db8:100::1").packed
    segment = struct.pack("!HHIIBBHHH", 40000, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
    csum = tcp_checksum(src0, dst.packed, segment)
    # The varied words: source groups 3..8 (bytes 4..15), sport, seq (two words).
    template_sum = sum(struct.unpack("!6H", src0[4:])) + 40000 + 0 + 1
    head = struct.pack("!6s6sH", dst_mac, src_mac, ETH_P_IPV6) + struct.pack("!IHBB", 6 << 28, 20, 6, 64) + src0[:4]
    tail_ip = dst.packed
    tail_tcp = struct.pack("!IBBHHH", 0, 5 << 4, 0x02, 65535, csum, 0)  # after sport, dport, seq
    pack = struct.Struct("!6H").pack
    rand = rng.getrandbits
    out = bytearray()
    for _ in range(count):
        g3 = SPOOF_GROUP3_MIN + rand(16) % (0x10000 - SPOOF_GROUP3_MIN)
        g4, g5, g6, g7 = rand(16), rand(16), rand(16), rand(16)
        sport = 1024 + rand(16) % (0x10000 - 1024)
        seq_hi, seq_lo = rand(16), rand(16)
        # g8 makes (sum of varied words) == template_sum (mod 0xffff)
        g8 = (template_sum - (g3 + g4 + g5 + g6 + g7 + sport + seq_hi + seq_lo)) % 0xFFFF
        out += head
        out += pack(g3, g4, g5, g6, g7, g8)
        out += tail_ip
        out += struct.pack("!HHHH", sport, dport, seq_hi, seq_lo)
        out += tail_tcp
    return bytes(out)


def check_frames(frames: bytes, sample: int = 64) -> None:
    """The TCP checksum of a sample of the frames is right (the compensation trick holds)."""
    n = len(frames) // FRAME_LEN
    for i in range(0, n, max(1, n // sample)):
        f = frames[i * FRAME_LEN:(i + 1) * FRAME_LEN]
        if tcp_checksum(f[22:38], f[38:54], f[54:74]) != 0:  # over a segment with its checksum: 0 when right
            raise FloodError(f"flood frame {i}: wrong TCP checksum")


# The sender: one process per share of the frames, in the client netns (nsenter), paced in
# batches toward `pps`, stopped by its count or its deadline. Prints "sent errors seconds".
SENDER = r"""
import errno, socket, sys, time
path, first, count, flen, pps, seconds, iface = sys.argv[1:8]
first, count, flen, pps, seconds = int(first), int(count), int(flen), float(pps), float(seconds)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind((iface, 0))
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
with open(path, "rb") as f:
    f.seek(first * flen)
    data = memoryview(f.read(count * flen))
send = s.send
sent = errors = 0
batch = 32
t0 = time.monotonic()
end = t0 + seconds
while sent < count:
    now = time.monotonic()
    if now > end:
        break
    upto = min(count, sent + 1024) if pps <= 0 else min(count, int((now - t0) * pps) + batch)
    if upto <= sent:
        time.sleep(0.0005)
        continue
    for o in range(sent * flen, upto * flen, flen):
        try:
            send(data[o:o + flen])
        except OSError as e:
            if e.errno not in (errno.ENOBUFS, errno.EAGAIN):
                raise
            errors += 1
    sent = upto
print(sent - errors, errors, round(time.monotonic() - t0, 3), flush=True)
"""


class Flood:
    """The sender processes; `stop()` kills those still running (by pid, their own session)."""

    def __init__(self, netns: str, iface: str, frames_path: Path, count: int, pps: int, seconds: float,
                 senders: int) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        share = math.ceil(count / senders)
        for i in range(senders):
            first, n = i * share, min(share, count - i * share)
            if n <= 0:
                break
            argv = load.netns_argv(netns, [sys.executable, "-c", SENDER, str(frames_path), str(first), str(n),
                                           str(FRAME_LEN), str(pps / senders if pps else 0), f"{seconds:.3f}",
                                           iface])
            self.procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                               start_new_session=True))
        self.started = time.monotonic()
        self.deadline = self.started + seconds + 10

    def wait(self) -> tuple[int, int, float]:
        """(frames sent, send errors, seconds of the longest sender)."""
        sent = errors = 0
        longest = 0.0
        for p in self.procs:
            try:
                out, err = p.communicate(timeout=max(0.1, self.deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stop()
                raise FloodError("a flood sender ran past its deadline") from None
            if p.returncode != 0:
                raise FloodError(f"flood sender exited {p.returncode}: {err.strip()[-300:]}")
            s, e, secs = out.split()
            sent, errors, longest = sent + int(s), errors + int(e), max(longest, float(secs))
        return sent, errors, longest

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)


def drop_flood_in_server(s: V6nat) -> None:
    """Control: the server container's netns drops TCP from anyone but the lab's client (the flood's
    sources), so the flood gets no SYN-ACK and its flows stay unassured."""
    s.server.reload()
    pid = s.server.attrs["State"]["Pid"]
    rules = (f"table ip6 bench_flood {{\n chain input {{\n type filter hook input priority 0; policy accept;\n"
             f" meta l4proto tcp ip6 saddr != {s.lab.client_addr} drop\n }}\n}}\n")
    done = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "nft", "-f", "-"], input=rules, text=True,
                          capture_output=True, timeout=30)
    if done.returncode != 0:
        raise FloodError(f"nft in the server's netns: {done.stderr.strip()[-300:]}")


# ---------------------------------------------------------------- clients

def _http_answer(sock: socket.socket) -> bool:
    """Read one response to GET / of the bench's nginx ("ok\\n", keep-alive) from sock."""
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"ok\n"):
        chunk = sock.recv(4096)
        if not chunk:
            return False
        data += chunk
        if len(data) > 8192:
            return False
    return data.startswith(b"HTTP/1.1 200")


class BusyFlow:
    """One keep-alive connection asking for a page every `interval_s`, on a thread of the client netns."""

    def __init__(self, netns: str, host: str, port: int, interval_s: float) -> None:
        self.pool = load.netns_pool(netns)
        self.stop_event = threading.Event()
        self.requests = 0
        self.error: str | None = None
        self.max_gap_s = 0.0
        self.gaps: list[tuple[float, float]] = []  # (when, gap) of gaps over BUSY_GAP_S
        self.sock = self.pool.submit(socket.create_connection, (host, port), 3).result()
        self.sock.settimeout(BUSY_TIMEOUT_S)
        self.sport = self.sock.getsockname()[1]
        self.future = self.pool.submit(self._run, interval_s)

    def _run(self, interval_s: float) -> None:
        last = time.monotonic()
        while not self.stop_event.is_set():
            try:
                self.sock.sendall(IDLE_REQUEST)
                if not _http_answer(self.sock):
                    raise OSError("connection closed or a bad answer")
            except OSError as e:
                self.error = f"after {self.requests} answers: {e or type(e).__name__}"
                return
            now = time.monotonic()
            gap = now - last
            self.max_gap_s = max(self.max_gap_s, gap)
            if gap > BUSY_GAP_S:
                self.gaps.append((now, gap))
            last = now
            self.requests += 1
            self.stop_event.wait(interval_s)

    def finish(self) -> dict[str, Any]:
        self.stop_event.set()
        self.future.result(timeout=BUSY_TIMEOUT_S + 5)
        self.sock.close()
        self.pool.shutdown()
        return {"answers": self.requests, "error": self.error, "max_gap_ms": round(self.max_gap_s * 1000, 1),
                "gaps_over_1s": len(self.gaps), "survived": self.error is None and not self.gaps}


class Prober:
    """New connections one after the other (connect + GET + answer, each within PROBE_TIMEOUT_S)."""

    def __init__(self, netns: str, host: str, port: int) -> None:
        self.pool = load.netns_pool(netns)
        self.host, self.port = host, port

    def run(self, seconds: float) -> Any:
        return self.pool.submit(self._run, seconds)

    def _run(self, seconds: float) -> dict[str, Any]:
        ok = failed = 0
        times: list[float] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.monotonic()
            try:
                with socket.create_connection((self.host, self.port), timeout=PROBE_TIMEOUT_S) as s:
                    s.settimeout(max(0.01, PROBE_TIMEOUT_S - (time.monotonic() - t0)))
                    s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                    good = s.recv(64).startswith(b"HTTP/1.1 200")
            except OSError:
                good = False
            if good:
                ok += 1
                times.append((time.monotonic() - t0) * 1000)
            else:
                failed += 1
            time.sleep(0.01)
        times.sort()
        return {"ok": ok, "failed": failed, "success_pct": round(100 * ok / (ok + failed), 2) if ok + failed else 0.0,
                "p50_ms": round(statistics.median(times), 2) if times else None,
                "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2) if times else None}

    def close(self) -> None:
        self.pool.shutdown()


# ---------------------------------------------------------------- the datapath's view

def ct_key(saddr: IPv6Address, daddr: IPv6Address, sport: int, dport: int) -> Any:
    from v6nat_ebpf.datapath import layout

    return layout.RawCtKey(layout.Addr(*saddr.packed), layout.Addr(*daddr.packed), socket.htons(sport),
                           socket.htons(dport), 6)


def idle_halves(dp: Any, s: V6nat, ports: list[int]) -> dict[str, int]:
    """How many of the idle connections still have their client-side half, their server-side half,
    and both, in either table (lookups from user space do not refresh an LRU entry)."""
    out = {"client_half": 0, "server_half": 0, "both": 0}
    for p in ports:
        c_half = ct_half(dp, ct_key(s.lab.client_addr, s.lab.host_addr, p, HTTP_HOST_PORT)) is not None
        s_half = ct_half(dp, ct_key(s.server_addr, s.lab.client_addr, 80, p)) is not None
        out["client_half"] += c_half
        out["server_half"] += s_half
        out["both"] += c_half and s_half
    return out


def table_fill(dp: Any) -> dict[str, Any]:
    fill = dp.map_fill()
    return {name: {"entries": fill[name][0], "capacity": fill[name][1]} for name in ("conntrack", "ct_unassured")}


def counter_delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in sorted(after) if after[k] - before.get(k, 0)}


# ---------------------------------------------------------------- the run

@dataclass
class Result:
    plan: dict[str, Any]
    started: str
    lab: str | None = None
    conntrack_max: int | None = None
    phases: dict[str, Any] = field(default_factory=dict)
    flood: dict[str, Any] = field(default_factory=dict)
    idle: dict[str, Any] = field(default_factory=dict)
    busy: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def measure_phase(s: V6nat, plan: Plan, prober: Prober, name: str) -> dict[str, Any]:
    t = s.target()
    cpu0 = load.CpuTimes.now()
    probe = prober.run(plan.seconds)
    r = load.wrk(s.lab.client_ns, t.url, plan.seconds, plan.connections, close=True)
    p = probe.result(timeout=plan.seconds + 10)
    spent = load.CpuTimes.now() - cpu0
    attempts = r.requests + r.socket_errors
    out = {"new_conn_per_s": round(r.requests_per_s, 1), "requests": r.requests, "socket_errors": r.socket_errors,
           "bad_status": r.bad_status, "wrk_success_pct": round(100 * (r.requests - r.bad_status) / attempts, 2)
           if attempts else 0.0, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "probe": p,
           "cpu_busy_cores": round(spent.busy_s / max(1e-9, spent.total_s) * os.cpu_count(), 2)}
    log.info("%s: %.0f new conn/s (wrk %d requests, %d socket errors, p99 %.1f ms); probe %s", name,
             r.requests_per_s, r.requests, r.socket_errors, r.p99_ms, p)
    return out


def run(plan: Plan, results_dir: Path) -> Result:
    res = Result(plan=asdict(plan), started=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ"))
    workdir = Path(tempfile.mkdtemp(prefix="bench-flood-"))
    previous_alarm = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(plan.max_run_s)
    try:
        with ExitStack() as stack:
            _measure(plan, res, stack, workdir)
    except Exception as e:  # noqa: BLE001 - recorded, the lab is already torn down
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        res.errors.append(f"{type(e).__name__}: {lines[0] if lines else ''}"
                          + (f" ... {lines[-1]}" if len(lines) > 1 else ""))
        log.exception("flood run failed")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous_alarm)
        shutil.rmtree(workdir, ignore_errors=True)
    res.verdict = verdict(res)
    write_results(res, results_dir)
    return res


def _measure(plan: Plan, res: Result, stack: ExitStack, workdir: Path) -> None:
    from v6nat_ebpf.datapath import Datapath

    conf = write_configs(workdir / "conf")
    (conf / "nginx.conf").write_text(NGINX_CONF.replace("keepalive_requests", f"{KEEPALIVE_TIMEOUT}\n    "
                                                        "keepalive_requests", 1))
    s = FloodedV6nat(conf)
    s.conntrack_max = plan.conntrack_max
    t_lab = time.monotonic()
    s.start(stack)
    res.lab = s.lab.name
    dp = stack.enter_context(Datapath.open_pinned(s.lab.pin_path))
    res.conntrack_max = dp.config.conntrack_max
    if res.conntrack_max != plan.conntrack_max:
        raise FloodError(f"v6nat runs with conntrack_max {res.conntrack_max}, not {plan.conntrack_max}")
    log.info("lab %s up in %.1f s, v6nat conntrack_max %d", s.lab.name, time.monotonic() - t_lab,
             res.conntrack_max)
    host, port = str(s.lab.host_addr), HTTP_HOST_PORT

    # The flood's frames, built now (seconds) so that the flood starts at full speed.
    # Paced: pps x the window (at least factor x capacity). Unpaced: more frames than a sender can
    # write in the window (UNPACED_PPS_MAX), and the senders stop at its end.
    # The flood alone first (lead_s, at least its factor x capacity when paced), then during wrk.
    lead_s = max(plan.lead_s, plan.factor * plan.conntrack_max / plan.flood_pps) if plan.flood_pps else plan.lead_s
    window_s = lead_s + plan.seconds + 0.5
    count = max(math.ceil(plan.factor * plan.conntrack_max),
                int((plan.flood_pps or UNPACED_PPS_MAX * plan.senders) * window_s))
    macs = {}
    for ns, iface in ((s.lab.client_ns, s.lab.client_iface), (s.lab.host_ns, s.lab.public_iface)):
        macs[iface] = bytes.fromhex(json.loads(s.lab.exec(ns, ["ip", "-j", "link", "show", iface]).stdout)[0]
                                    ["address"].replace(":", ""))
    t0 = time.monotonic()
    frames = syn_frames(count, macs[s.lab.public_iface], macs[s.lab.client_iface], s.lab.host_addr, port)
    check_frames(frames)
    frames_path = workdir / "syn.frames"
    frames_path.write_bytes(frames)
    del frames
    log.info("%d SYN frames (%.1fx conntrack_max) built in %.1f s", count, count / plan.conntrack_max,
             time.monotonic() - t0)

    # The busy connection and the probe first; the no-flood rate; then (1) the idle connections,
    # opened after it (so that the baseline's own short connections are not what ages them).
    busy = BusyFlow(s.lab.client_ns, host, port, plan.busy_interval_s)
    stack.callback(lambda: busy.finish() if not busy.stop_event.is_set() else None)
    prober = Prober(s.lab.client_ns, host, port)
    stack.callback(prober.close)
    res.tables["start"] = table_fill(dp)
    res.phases["no_flood"] = measure_phase(s, plan, prober, "no flood")
    res.tables["after_no_flood"] = table_fill(dp)

    client_pool = stack.enter_context(load.netns_pool(s.lab.client_ns))
    idle: list[socket.socket] = []
    stack.callback(lambda: [c.close() for c in idle])
    for _ in range(plan.idle):
        c = client_pool.submit(socket.create_connection, (host, port), 3).result()
        c.settimeout(3)
        c.sendall(IDLE_REQUEST)
        if not _http_answer(c):
            raise FloodError("an idle connection got no first answer")
        idle.append(c)
    idle_ports = [c.getsockname()[1] for c in idle]
    time.sleep(0.2)
    res.tables["before_flood"] = table_fill(dp)
    halves_at = {"before_flood": idle_halves(dp, s, idle_ports)}

    counters0 = dp.counters()
    if plan.server_drops_flood:
        drop_flood_in_server(s)
        res.notes.append("control run: the server's netns drops the flood's SYNs (nft), so they are never answered")
    flood = Flood(s.lab.client_ns, s.lab.client_iface, frames_path, count, plan.flood_pps,
                  window_s + 5 if plan.flood_pps else window_s,
                  plan.senders)
    stack.callback(flood.stop)
    time.sleep(lead_s)
    res.tables["flood_alone"] = table_fill(dp)
    halves_at["flood_alone"] = idle_halves(dp, s, idle_ports)
    log.info("after %.1f s of flood alone: tables %s, idle halves %s", lead_s, res.tables["flood_alone"],
             halves_at["flood_alone"])
    res.phases["flood"] = measure_phase(s, plan, prober, "during the flood")
    res.tables["during"] = table_fill(dp)
    sent, errors, flood_s = flood.wait()
    counters1 = dp.counters()
    res.flood = {"frames": count, "sent": sent, "send_errors": errors, "seconds": flood_s,
                 "pps": round(sent / flood_s) if flood_s else 0, "x_conntrack_max": round(sent / plan.conntrack_max, 2),
                 "target_pps": plan.flood_pps, "senders": len(flood.procs),
                 "sources": "2001:db8:0100-ffff::/48s, random host part, random sport and seq"}
    log.info("flood: %d SYNs in %.1f s (%.0f/s, %.1fx conntrack_max), %d send errors", sent, flood_s,
             res.flood["pps"], res.flood["x_conntrack_max"], errors)
    time.sleep(plan.after_wait_s)
    res.tables["after_flood"] = table_fill(dp)
    res.counters = {"during_flood": counter_delta(counters1, counters0)}

    # (4) the idle connections: their halves first (a request could re-create them), then a request each.
    halves_at["after_flood"] = idle_halves(dp, s, idle_ports)
    # A request on every idle connection at once, then their answers within one deadline.
    answered = 0
    failures: list[str] = []
    sent_on = []
    for c in idle:
        try:
            c.sendall(IDLE_REQUEST)
            sent_on.append(c)
        except OSError as e:
            failures.append(str(e) or type(e).__name__)
    deadline = time.monotonic() + 3
    for c in sent_on:
        try:
            c.settimeout(max(0.05, deadline - time.monotonic()))
            if _http_answer(c):
                answered += 1
                continue
            failures.append("closed or bad answer")
        except OSError as e:
            failures.append(str(e) or type(e).__name__)
    res.idle = {"connections": plan.idle, "answered_after": answered, "halves_kept": halves_at["after_flood"],
                "halves_kept_at": halves_at,
                "failures": sorted(set(failures))}
    log.info("idle: %d/%d answered after the flood; halves kept %s", answered, plan.idle, halves_at)

    res.phases["after_flood"] = measure_phase(s, plan, prober, "after the flood")
    res.busy = busy.finish()
    log.info("busy flow: %s", res.busy)
    res.counters["whole_run"] = {k: v for k, v in dp.counters().items() if v}
    res.tables["end"] = table_fill(dp)
    if s.daemon is not None and s.daemon.proc is not None and s.daemon.proc.poll() is not None:
        res.errors.append(f"v6nat exited {s.daemon.proc.returncode} during the run: {s.log_tail()}")


def verdict(res: Result) -> dict[str, Any]:
    out: dict[str, Any] = {}
    base, during = res.phases.get("no_flood"), res.phases.get("flood")
    if base and during:
        ratio = during["new_conn_per_s"] / base["new_conn_per_s"] if base["new_conn_per_s"] else 0.0
        out["rate_ratio"] = round(ratio, 3)
        out["rate_ok"] = ratio >= TARGET_RATE_RATIO
        out["probe_success_pct"] = during["probe"]["success_pct"]
    if res.idle:
        out["idle_survived"] = f"{res.idle['answered_after']}/{res.idle['connections']}"
        out["idle_ok"] = res.idle["answered_after"] == res.idle["connections"]
    if res.busy:
        out["busy_ok"] = bool(res.busy.get("survived"))
    if res.flood:
        out["flood_ok"] = res.flood["x_conntrack_max"] >= res.plan["factor"]
    keys = ("rate_ok", "idle_ok", "busy_ok", "flood_ok")
    out["all_ok"] = not res.errors and all(out.get(k) for k in keys)
    return out


def write_results(res: Result, results_dir: Path) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"flood-{res.started}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(res), indent=1) + "\n")
    tmp.replace(path)
    shutil.copyfile(path, results_dir / "flood-latest.json")
    log.info("results in %s", path)
    return path


def table(res: Result) -> str:
    """The figures as a plain-text table."""
    rows = [("", "no flood", "during flood", "after flood")]
    ph = [res.phases.get(k, {}) for k in ("no_flood", "flood", "after_flood")]

    def col(f: Any) -> list[str]:
        return [f(p) if p else "-" for p in ph]

    rows.append((f"new conn/s (wrk -c{res.plan['connections']}, close)",
                 *col(lambda p: f"{p['new_conn_per_s']:,.0f}")))
    rows.append(("wrk success % (socket errors)",
                 *col(lambda p: f"{p['wrk_success_pct']:.1f} ({p['socket_errors']})")))
    rows.append(("wrk latency p50 / p99 ms", *col(lambda p: f"{p['p50_ms']:.1f} / {p['p99_ms']:.1f}")))
    rows.append(("probe success % (<1 s)",
                 *col(lambda p: f"{p['probe']['success_pct']:.1f} "
                                f"({p['probe']['ok']}/{p['probe']['ok'] + p['probe']['failed']})")))
    rows.append(("CPU busy cores", *col(lambda p: f"{p['cpu_busy_cores']:.2f}")))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in rows]
    lines.append("")
    if res.flood:
        f = res.flood
        lines.append(f"flood: {f['sent']:,} spoofed SYNs in {f['seconds']:.1f} s ({f['pps']:,}/s, "
                     f"{f['x_conntrack_max']}x conntrack_max {res.conntrack_max:,}), "
                     f"{f['send_errors']} send errors")
    for when in ("start", "after_no_flood", "before_flood", "flood_alone", "during", "after_flood", "end"):
        t = res.tables.get(when)
        if t:
            lines.append(f"tables {when:<14} conntrack {t['conntrack']['entries']:>7,}/{t['conntrack']['capacity']:,}"
                         f"   ct_unassured {t['ct_unassured']['entries']:>6,}/{t['ct_unassured']['capacity']:,}")
    if res.counters.get("during_flood"):
        lines.append("counters during the flood: " + ", ".join(f"{k} {v:,}" for k, v in
                                                               res.counters["during_flood"].items()))
    if res.idle:
        i = res.idle
        lines.append(f"idle connections: {i['answered_after']}/{i['connections']} answered after the flood; "
                     "both halves kept: " + ", ".join(f"{k} {v['both']}" for k, v in i["halves_kept_at"].items())
                     + (f"; failures: {i['failures']}" if i['failures'] else ""))
    if res.busy:
        b = res.busy
        lines.append(f"busy connection: {'survived' if b['survived'] else 'BROKE'} ({b['answers']:,} answers, "
                     f"longest gap {b['max_gap_ms']} ms" + (f", error: {b['error']}" if b['error'] else "") + ")")
    v = res.verdict
    if v:
        lines.append(f"verdict: rate ratio {v.get('rate_ratio')} (target >= {TARGET_RATE_RATIO}) "
                     f"{'ok' if v.get('rate_ok') else 'MISSED'}; idle {v.get('idle_survived')} "
                     f"{'ok' if v.get('idle_ok') else 'MISSED'}; busy {'ok' if v.get('busy_ok') else 'MISSED'}; "
                     f"flood >= {res.plan['factor']}x {'ok' if v.get('flood_ok') else 'MISSED'}")
    for n in res.notes:
        lines.append(f"note: {n}")
    for e in res.errors:
        lines.append(f"ERROR: {e}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> tuple[Plan, Path, bool]:
    p = argparse.ArgumentParser(prog="python -m bench.flood",
                                description="New connections and established flows through v6nat during a spoofed "
                                            "SYN flood of several times its conntrack capacity (issue 12).",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:" + __doc__.split("Examples:")[1])
    p.add_argument("--quick", action="store_true", help="small table (4096), 2 s runs, 8 idle connections (< 60 s)")
    p.add_argument("--conntrack-max", type=int, help="v6nat's conntrack capacity (default 16384; quick 4096)")
    p.add_argument("--factor", type=float, help="the flood sends at least this many times conntrack_max (default 3)")
    p.add_argument("--flood-pps", type=int, help="flood rate over all senders, 0 = as fast as they go (default 20000)")
    p.add_argument("--senders", type=int, help="flood sender processes (default 1)")
    p.add_argument("--seconds", type=int, help="each wrk run (default 5; quick 2)")
    p.add_argument("--idle", type=int, help="idle connections kept through the flood (default 20; quick 8)")
    p.add_argument("--after-wait", type=float, dest="after_wait_s",
                   help="seconds between the flood's end and the checks after it (default 0.5)")
    p.add_argument("--server-drops-flood", action="store_true",
                   help="control: the server drops the flood's SYNs, so no flood flow is ever answered")
    p.add_argument("--max-run-s", type=int, help="bound on the whole run, lab included (default 280; quick 100)")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    a = p.parse_args(argv)
    plan = QUICK if a.quick else Plan()
    changes = {k: getattr(a, k) for k in ("conntrack_max", "factor", "flood_pps", "senders", "seconds", "idle",
                                          "after_wait_s", "max_run_s") if getattr(a, k) is not None}
    for k, v in changes.items():
        if v < 0 or (v == 0 and k not in ("flood_pps", "after_wait_s")):
            p.error(f"--{k.replace('_', '-')} must be positive")
    if changes.get("conntrack_max", 64) < 64:
        p.error("--conntrack-max must be >= 64")
    if a.server_drops_flood:
        changes["server_drops_flood"] = True
    return replace(plan, **changes), a.results_dir, a.check


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("docker", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    plan, results_dir, check = parse_args(argv)
    if os.geteuid() != 0:
        print("bench.flood: must run as root (try: sudo make bench-flood)", file=sys.stderr)
        return 2
    res = run(plan, results_dir)
    print(table(res))
    if res.errors:
        return 2
    return 1 if check and not res.verdict.get("all_ok") else 0


if __name__ == "__main__":
    sys.exit(main())
