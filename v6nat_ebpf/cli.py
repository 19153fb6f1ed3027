"""The `v6nat` command: a thin registry of subcommands.

Each subcommand lives in the module that owns its work and registers itself
with `add_parser(subparsers)`, setting `func` (args -> exit status). To add a
command, write that function in your module and append the module to
COMMAND_MODULES; keep heavy imports (bcc, docker) inside the functions so
`v6nat --help` stays fast and works anywhere.

Errors: `V6natError` -> one line `v6nat: error: ...` on stderr, exit 1; bad
usage -> one line, exit 2; Ctrl-C -> exit 130, quietly.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import NoReturn, Sequence

from v6nat_ebpf.errors import V6natError

log = logging.getLogger(__name__)

# Order here is the order in `v6nat --help`.
COMMAND_MODULES = (
    "v6nat_ebpf.commands.run",  # run
    "v6nat_ebpf.commands.status",  # status
    "v6nat_ebpf.commands.flows",  # flows
    "v6nat_ebpf.commands.bans",  # ban, unban, bans (issue 16)
    "v6nat_ebpf.commands.trace",  # trace
    "v6nat_ebpf.commands.cleanup",  # cleanup
    "v6nat_ebpf.preflight",  # check
    "v6nat_ebpf.lab.demo",  # demo
    "v6nat_ebpf.lab.cli",  # lab cleanup
)

EPILOG = """\
examples:
  sudo v6nat check                      is this machine ready? (ok/warn/fail per line)
  sudo v6nat check --docker-host unix:///run/docker.sock
  sudo v6nat demo                       show the problem in a throw-away lab
  sudo v6nat lab cleanup                remove what a killed test or demo left behind
"""

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, not usage text plus a line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _VersionAction(argparse.Action):
    """--version: read the layout version only when asked."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> NoReturn:
        from v6nat_ebpf.versions import version_text

        print(version_text())
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="v6nat", description="IPv6 NAT for Docker ULA networks in TC eBPF.",
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_VersionAction, nargs=0, help="show the version and the datapath layout version")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except V6natError as exc:
        print(f"v6nat: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
