"""The scrape benchmark runs (quick mode) and prints its figure."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_metrics_scrape_bench_quick() -> None:
    result = subprocess.run([sys.executable, "-m", "bench.metrics_scrape", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"mappings +200  scrape \d+\.\d{3} s \(median of 1\)  first \d+\.\d{3} s  snapshot \d+\.\d{3} s  body \d+\.\d MB  load \d+\.\d\d\n", result.stdout), result.stdout
