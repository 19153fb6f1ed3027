"""`v6nat run`: parse the options (flags and V6NAT_* env) and hand them to the daemon.

Must not import at module level: bcc, docker, pyroute2 (they load in the command).
"""

from __future__ import annotations

import argparse

from v6nat_ebpf.config import add_run_arguments, run_options

EPILOG = """\
examples:
  sudo v6nat run --public-iface eth0
  sudo v6nat run --public-iface eth0 --public-iface eth1 --snat-ports 62000-65535
  sudo V6NAT_PUBLIC_IFACE=eth0 V6NAT_LOG_FORMAT=json v6nat run
  sudo v6nat run --public-iface eth0 --docker-host unix:///run/docker.sock --metrics-listen [::1]:9661

signals: SIGTERM/SIGINT stop (the datapath keeps serving; see --detach-on-exit), SIGHUP resyncs with Docker.
"""


def cmd_run(args: argparse.Namespace) -> int:
    from v6nat_ebpf import daemon

    return daemon.run(run_options(args))


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run", help="the daemon: NAT for Docker's ULA networks, kept in sync with Docker",
        description="Load the datapath (or adopt the pinned one), attach it to the public interfaces and the "
                    "managed Docker bridges, and keep its maps equal to what Docker publishes.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.set_defaults(func=cmd_run)
