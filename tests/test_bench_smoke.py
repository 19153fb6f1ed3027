"""Smoke test of the benchmark harness: one figure, one system, one round of one second.

Runs `python -m bench.run` as `make bench` does (labs built and torn down,
results JSON, Markdown and plots) into a temporary directory, and checks that
the run measured a positive figure and left no lab behind. No timing assertion:
the point is that the harness keeps working.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from v6nat_ebpf.lab import leftovers_of

REPO = Path(__file__).resolve().parent.parent
SYSTEM = "v6nat"


@pytest.mark.lab
def test_bench_harness_measures_new_connections(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--systems", SYSTEM, "--figures", "new_conn", "--levels", "1",
         "--rounds", "1", "--seconds", "1", "--results-dir", str(tmp_path / "results"),
         "--docs-dir", str(tmp_path / "docs")],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]

    doc = json.loads((tmp_path / "results" / "latest.json").read_text())
    assert doc["errors"] == []
    [sample] = [s for s in doc["samples"] if s["metric"] == "new_conn_per_s"]
    assert sample["system"] == SYSTEM and sample["ports"] == 1
    assert sample["value"] > 0

    page = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert f"| 1 | {SYSTEM} | 1 |" in page
    assert (tmp_path / "docs" / "img" / "bench-new-conn.png").stat().st_size > 0
    lab = doc["systems"][SYSTEM]["lab"]
    assert lab and leftovers_of(lab) == [], f"the harness left lab {lab} behind"


@pytest.mark.lab
def test_flood_bench_measures_all_phases(tmp_path: Path) -> None:
    """`python -m bench.flood --quick` (about 25 s): every phase measured, the flood sent at least
    3x the conntrack capacity, JSON written, the lab gone. The targets themselves are not asserted
    here (that is the figure's job, reported by the bench), only that the harness measures them."""
    done = subprocess.run([sys.executable, "-m", "bench.flood", "--quick", "--results-dir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    doc = json.loads((tmp_path / "flood-latest.json").read_text())
    assert doc["errors"] == []
    for phase in ("no_flood", "flood", "after_flood"):
        assert doc["phases"][phase]["new_conn_per_s"] > 0, phase
    assert doc["flood"]["x_conntrack_max"] >= 3
    assert doc["idle"]["connections"] == 8 and "answered_after" in doc["idle"]
    assert doc["busy"]["answers"] > 0
    assert doc["lab"] and leftovers_of(doc["lab"]) == [], f"bench.flood left lab {doc['lab']} behind"
    assert "new conn/s" in done.stdout


@pytest.mark.lab
def test_hostlocal_connect_bench_measures_every_variant(tmp_path: Path) -> None:
    """`python -m bench.hostlocal_connect` at its smallest: every variant timed, every published
    connect translated by the hooks (the bench checks that itself), JSON written, no cgroup or lab left."""
    done = subprocess.run([sys.executable, "-m", "bench.hostlocal_connect", "--rounds", "1", "--connects", "50",
                           "--results-dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    doc = json.loads((tmp_path / "hostlocal-latest.json").read_text())
    assert doc["translated_connects"] == 50
    assert all(row["median_us"] > 0 for row in doc["rows"].values()) and len(doc["rows"]) == 3
    assert leftovers_of(doc["lab"]) == [], f"the bench left lab {doc['lab']} behind (its cgroup included)"


def test_footprint_figures_replace_their_own_section_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """`make bench-footprint` rewrites its section of docs/benchmarks.md; sections written by hand or by
    `make bench` around it stay (it used to render the whole page again and drop them)."""
    monkeypatch.syspath_prepend(str(REPO))  # bench/ is the checkout's, not an installed package
    from bench.report import replace_section

    page = "# Benchmarks\n\n## Control plane\n\n### footprint\n\nold figures\n\n### by hand\n\nkept\n\n## Datapath\n\nkept too\n"
    new = ["### footprint", "", "new figures", ""]
    replaced = replace_section(page, new)
    assert replaced == page.replace("old figures", "new figures")
    assert replace_section(replaced, new) == replaced
    assert replace_section("# Benchmarks\n", new) == "# Benchmarks\n\n### footprint\n\nnew figures\n"
