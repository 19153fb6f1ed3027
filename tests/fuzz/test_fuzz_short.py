"""The short fuzz run of `make test` (the full one is `make fuzz`): a few
hundred thousand generated and mutated packets through every TC program,
judged by the model (tests/fuzz/model.py) under its default rules (`strict`:
issue 12's target, which the datapath on main implements). Fails on any
test-run error and on any violation. Coverage is asserted too, so a harness that stops reaching the
translations fails instead of passing quietly."""

from __future__ import annotations

import os

import pytest

from .campaign import format_report, run_campaign

PACKETS = int(os.environ.get("V6NAT_FUZZ_SHORT_PACKETS", "500000"))
SEED = int(os.environ.get("V6NAT_FUZZ_SEED", "12"))
DEADLINE_S = 35.0  # per worker, after setup: the run stays under a minute on a loaded machine


def test_short_fuzz_run_finds_no_violation() -> None:
    if os.geteuid() != 0:
        pytest.fail("the fuzzer needs root (bpf, network namespaces): run `sudo make test`")
    rep = run_campaign(PACKETS, jobs=min(2, os.cpu_count() or 1), seed=SEED, deadline_s=DEADLINE_S)
    text = format_report(rep)
    print(text)
    assert not rep.errors, text
    assert rep.packets >= min(PACKETS, 50_000), text
    outcomes = {k for c in rep.per_prog.values() for k in c}
    for needed in ("flow", "new_dnat", "new_snat", "new_hairpin", "icmp_error", "fragment", "dropped", "untouched"):
        assert needed in outcomes, f"no packet was {needed}: the harness lost coverage\n{text}"
    for prog, c in rep.per_prog.items():
        assert sum(c.values()) > rep.packets // 20, f"{prog} got too few packets\n{text}"
    actions = {k for c in rep.counters.values() for k in c}
    for needed in ("redirect", "redirect_peer", "drop_spoofed_source", "drop_bogon_source", "drop_bad_checksum",
                   "drop_icmp_foreign", "drop_isolation", "drop_icc_blocked", "drop_veth_unknown", "drop_unpublished"):
        assert needed in actions, f"no packet counted {needed}: the harness lost coverage\n{text}"
    assert not rep.violations, f"violations {dict(rep.violations)}\n{text}"
