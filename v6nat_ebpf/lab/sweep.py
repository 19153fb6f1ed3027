"""Finding and removing what a lab leaves: processes, mounts, namespaces, pins, cgroups, state.

`Lab.teardown` removes its own lab with these; `sweep_leftovers()` (`v6nat lab cleanup`, the test
session's start) removes labs whose owner process is gone (pid and start time in the state
directory), so a SIGKILLed run is cleaned by the next one and a concurrent run is left alone.

Imports: stdlib and lab.common.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from v6nat_ebpf.lab.common import BPFFS, CGROUP_ROOT, LAB_PREFIX, NETNS_DIR, PIN_PREFIX, STATE_ROOT, run

log = logging.getLogger(__name__)

_MNT_DETACH = 2


@dataclass(frozen=True)
class Leftover:
    """One thing sweep_leftovers() removed."""

    kind: str  # "process", "mount", "netns", "dir", "pins", "cgroup"
    what: str

    def __str__(self) -> str:
        return f"{self.kind:8} {self.what}"


def owner_token(pid: int) -> str:
    """pid plus its start time, so a reused pid is not taken for the lab's owner."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    start_time = stat.rsplit(")", 1)[1].split()[19]
    return f"{pid} {start_time}\n"


def _owner_alive(state_dir: Path) -> bool:
    try:
        token = (state_dir / "owner").read_text()
        return owner_token(int(token.split()[0])) == token
    except (OSError, ValueError, IndexError):
        return False


def _proc_table() -> dict[int, int]:
    """pid -> parent pid for every process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            table[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return table


def pids_in_namespaces(namespaces: Sequence[str]) -> list[int]:
    """Processes in these netns, with all their descendants (container processes
    live in netns of their own, below the shims that live in the host netns)."""
    inodes = set()
    for ns in namespaces:
        try:
            inodes.add(os.stat(NETNS_DIR / ns).st_ino)
        except OSError:
            pass
    if not inodes:
        return []
    table = _proc_table()
    roots = []
    for pid in table:
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino in inodes:
                roots.append(pid)
        except OSError:
            continue
    return _with_descendants(roots, table)


def _with_descendants(roots: Sequence[int], table: dict[int, int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in table.items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid in found or pid == os.getpid():
            continue
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def kill_pids(pids: Sequence[int], grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL what is still there after grace_s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in pids:
            try:
                os.kill(pid, sig)
                alive.append(pid)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while alive and time.monotonic() < deadline:
            alive = [pid for pid in alive if _exists(pid)]
            time.sleep(0.05)
        if not alive:
            return
        pids = alive


def _exists(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill_group(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below path, deepest first."""
    prefix = str(path).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(path) or point.startswith(prefix):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def umount(point: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(point.encode(), _MNT_DETACH) != 0:
        log.warning("umount %s: %s", point, os.strerror(ctypes.get_errno()))


def delete_netns(ns: str) -> None:
    result = run(["ip", "netns", "delete", ns], check=False)
    if result.returncode != 0:
        log.warning("ip netns delete %s: %s", ns, result.stderr.strip())


def remove_tree(path: Path) -> None:
    """rm -rf, but never through a mount point (a bind of /usr must not be emptied)."""
    if not path.exists():
        return
    still_mounted = mounts_under(path)
    if still_mounted:
        log.warning("not removing %s: %s still mounted", path, still_mounted[0])
        return
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        log.warning("could not remove %s completely", path)


def _cgroup_dirs(lab_name: str | None) -> Iterator[Path]:
    """Our cgroup parents in every hierarchy (v1 controllers and v2)."""
    pattern = f"{PIN_PREFIX}{lab_name}" if lab_name else f"{PIN_PREFIX}{LAB_PREFIX}*"
    yield from CGROUP_ROOT.glob(pattern)
    yield from CGROUP_ROOT.glob(f"*/{pattern}")


def remove_cgroups(lab_name: str) -> None:
    for top in _cgroup_dirs(lab_name):
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            _rmdir_quiet(d)
        _rmdir_quiet(top)


def _rmdir_quiet(path: Path) -> None:
    try:
        path.rmdir()
    except OSError as exc:
        log.warning("rmdir %s: %s", path, exc)


def _cgroup_pids(top: Path) -> list[int]:
    pids: list[int] = []
    for procs in top.rglob("cgroup.procs"):
        try:
            pids += [int(p) for p in procs.read_text().split()]
        except OSError:
            pass
    return pids


# -------------------------------------------------------------------- sweep


# -------------------------------------------------------------------- sweep


def _lab_name_of(entry: str) -> str | None:
    """The lab name in a netns name, state dir name or pin dir name."""
    name = entry.removeprefix(PIN_PREFIX)
    if not name.startswith(LAB_PREFIX):
        return None
    return name[:len(LAB_PREFIX) + 6]


def live_labs() -> list[str]:
    """Names of labs whose owning process still runs."""
    if not STATE_ROOT.exists():
        return []
    return sorted(d.name for d in STATE_ROOT.iterdir() if _owner_alive(d))


def sweep_leftovers() -> list[Leftover]:
    """Remove what killed runs left behind; labs whose owner still runs are kept."""
    alive = set(live_labs())
    dead: set[str] = set()
    netns = sorted(NETNS_DIR.iterdir()) if NETNS_DIR.exists() else []
    states = sorted(STATE_ROOT.iterdir()) if STATE_ROOT.exists() else []
    pins = sorted(BPFFS.glob(f"{PIN_PREFIX}{LAB_PREFIX}*")) if BPFFS.exists() else []
    cgroups = list(_cgroup_dirs(None))
    for path in [*netns, *states, *pins, *cgroups]:
        name = _lab_name_of(path.name)
        if name and name not in alive:
            dead.add(name)

    removed: list[Leftover] = []
    for name in sorted(dead):
        removed += _sweep_lab(name)
    return removed


def _sweep_lab(name: str) -> list[Leftover]:
    removed: list[Leftover] = []
    state_dir = STATE_ROOT / name
    namespaces = [p.name for p in NETNS_DIR.glob(f"{name}-*")] if NETNS_DIR.exists() else []

    table = _proc_table()
    roots = []
    try:
        roots.append(int((state_dir / "dockerd.pid").read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        pass
    for top in _cgroup_dirs(name):
        roots += _cgroup_pids(top)
    pids = sorted(set(_with_descendants([p for p in roots if p in table], table))
                  | set(pids_in_namespaces(namespaces)))
    if pids:
        comms = {pid: _comm(pid) for pid in pids}
        kill_pids(pids)
        removed += [Leftover("process", f"{pid} {comms.get(pid, '?')}") for pid in pids]

    for point in mounts_under(state_dir):
        umount(point)
        removed.append(Leftover("mount", point))
    for ns in namespaces:
        delete_netns(ns)
        removed.append(Leftover("netns", ns))
    pin_dir = BPFFS / f"{PIN_PREFIX}{name}"
    if pin_dir.exists():
        remove_tree(pin_dir)
        removed.append(Leftover("pins", str(pin_dir)))
    cgroups = list(_cgroup_dirs(name))
    if cgroups:
        remove_cgroups(name)
        removed += [Leftover("cgroup", str(c)) for c in cgroups]
    if state_dir.exists():
        remove_tree(state_dir)
        removed.append(Leftover("dir", str(state_dir)))
    return removed


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "(gone)"


def leftovers_of(lab_name: str) -> list[str]:
    """What of lab `lab_name` still exists: namespaces, processes, mounts, dirs; empty when clean."""
    found = [f"netns {p.name}" for p in NETNS_DIR.glob(f"{lab_name}-*")] if NETNS_DIR.exists() else []
    state_dir = STATE_ROOT / lab_name
    found += [f"mount {m}" for m in mounts_under(state_dir)]
    if state_dir.exists():
        found.append(f"dir {state_dir}")
    pin_dir = BPFFS / f"{PIN_PREFIX}{lab_name}"
    if pin_dir.exists():
        found.append(f"pins {pin_dir}")
    found += [f"cgroup {c}" for c in _cgroup_dirs(lab_name)]
    for pid in _proc_table():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(state_dir) + "/" in cmdline and pid != os.getpid():
            found.append(f"process {pid} {cmdline[:80]}")
    return found
