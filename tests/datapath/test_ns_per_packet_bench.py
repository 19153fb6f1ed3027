"""The per-packet benchmark runs and prints its table (--quick; no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "datapath_ns_per_packet.py"


def test_bench_quick_prints_a_row_per_path() -> None:
    r = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--dnat-entries", "100"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["path", "method", "ns/packet"]
    rows = [line for line in lines[1:] if ":" in line and not line.startswith("(")]
    assert len(rows) == 13 + 8  # paths, then 4 paths with the trace off and with an idle tracer
    assert all(float(row.split()[-1]) > 0 for row in rows)
