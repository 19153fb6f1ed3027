"""The `v6nat` command: a thin registry of subcommands.

Each subcommand lives in the module that owns its work and registers itself
with `add_parser(subparsers)`, setting `func` (args -> exit status). To add a
command, write that function in your module and name it in COMMANDS; keep
heavy imports (bcc, docker) inside the functions so `v6nat --help` stays fast
and works anywhere. A command line that names a command imports only its
module (`v6nat flows` does not pay for the daemon's imports).

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

# Each command and the module that registers it; order here is the order in `v6nat --help`.
COMMANDS = {
    "run": "v6nat_ebpf.commands.run",
    "status": "v6nat_ebpf.commands.status",
    "flows": "v6nat_ebpf.commands.flows",
    "ban": "v6nat_ebpf.commands.bans",  # ban, unban, bans (issue 16)
    "unban": "v6nat_ebpf.commands.bans",
    "bans": "v6nat_ebpf.commands.bans",
    "trace": "v6nat_ebpf.commands.trace",
    "cleanup": "v6nat_ebpf.commands.cleanup",
    "check": "v6nat_ebpf.preflight",
    "demo": "v6nat_ebpf.lab.demo",
    "lab": "v6nat_ebpf.lab.cli",  # lab cleanup
}
COMMAND_MODULES = tuple(dict.fromkeys(COMMANDS.values()))

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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of `command` alone (with its module's siblings)."""
    parser = _Parser(prog="v6nat", description="IPv6 NAT for Docker ULA networks in TC eBPF.",
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_VersionAction, nargs=0, help="show the version and the datapath layout version")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in (COMMANDS[command],) if command in COMMANDS else COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The command `argv` names: its first word that is not an option (the top-level options take no value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_command(argv)).parse_args(argv)
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
