"""make fuzz: `python -m tests.fuzz.run --packets 1000000 [--jobs N] [--seed S] [--rules strict|lenient]`.

Prints the figures (packets per program, translations, drops by reason,
checksum failures, model violations, errors, elapsed) and exits 1 when any
violation or error was found. --json writes the whole report (samples with
hex reproducers included)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from .campaign import format_report, run_campaign
from .model import DEFAULT_RULES, RULESETS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rules", choices=sorted(RULESETS), default=DEFAULT_RULES,
                    help="strict: issue 12's target, which main implements (default); lenient: the datapath "
                         "before issue 12")
    ap.add_argument("--json", help="write the full report here")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("the fuzzer needs root (bpf, network namespaces)", file=sys.stderr)
        return 2
    rep = run_campaign(args.packets, args.jobs, args.seed, args.rules)
    print(format_report(rep))
    if args.json:
        with open(args.json, "w") as f:
            plain = {f.name: getattr(rep, f.name) for f in dataclasses.fields(rep)}
            json.dump(plain, f, indent=1, default=str)  # Counters are dicts
    return 1 if rep.errors or rep.violations else 0


if __name__ == "__main__":
    sys.exit(main())
