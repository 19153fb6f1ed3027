"""The short-lived child that compiles and pins the programs (`Datapath.open` starts it when no
programs of the current build are pinned): `python -m v6nat_ebpf.datapath.build --pin-path DIR
--conntrack-max N --dnat-max N`. Compiling loads LLVM, which no process frees; here it leaves
when this process exits. Errors: one line `v6nat: error: ...` on stderr, exit status 1.

Imports: stdlib, datapath.loader (and through it bcc), preflight (its bcc and headers checks).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from v6nat_ebpf.datapath.loader import build_programs
from v6nat_ebpf.datapath.maps import DatapathConfig
from v6nat_ebpf.errors import V6natError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="v6nat-build", description=__doc__.splitlines()[0])
    parser.add_argument("--pin-path", required=True, type=Path)
    parser.add_argument("--conntrack-max", required=True, type=int)
    parser.add_argument("--dnat-max", required=True, type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from v6nat_ebpf import preflight  # its checks report instead of raising: a "fail" is our error

    try:
        for check in (preflight.check_headers, preflight.check_bcc):  # no headers: say that, not what bcc makes of it
            finding = check()
            if finding.status == "fail":
                raise V6natError(f"{finding.what}: {finding.detail}")
        build_programs(args.pin_path, DatapathConfig(conntrack_max=args.conntrack_max, dnat_max=args.dnat_max))
    except V6natError as exc:
        print(f"v6nat: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
