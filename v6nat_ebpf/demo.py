"""`v6nat demo`: the problem v6nat solves, shown in a throw-away lab.

The demo is a list of steps run in order inside one lab; each step prints a
progress line and what it saw. The daemon's steps (start v6nat, show the
client's own address arriving) are added to `demo_steps()` later.

Imports: stdlib and v6nat_ebpf.lab; no datapath (the daemon part comes later).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from typing import Callable, TextIO

from v6nat_ebpf.lab import PEER_ECHO_COMMAND, PEER_ECHO_PORT, Lab, LabConfig, PeerProbe

log = logging.getLogger(__name__)

ULA_SUBNET = "fd00:ca7e:d09e::/64"
PUBLISHED_PORT = 8080


@dataclass(frozen=True)
class DemoStep:
    title: str
    config: LabConfig
    explain: Callable[[Lab, PeerProbe], str]


def _explain_proxy(lab: Lab, probe: PeerProbe) -> str:
    if probe.peer is None:
        return f"no answer ({probe.detail})"
    if probe.peer == lab.client_addr:
        return f"the container saw {probe.peer}: the client's own address"
    return (f"the container saw {probe.peer}, not the client's {lab.client_addr}:\n"
            "      Docker's userland proxy accepted the connection and opened its own to the container.\n"
            "      A mail server's DNSBL check or a rate limit would judge the proxy, not the client.")


def _explain_no_proxy(lab: Lab, probe: PeerProbe) -> str:
    if probe.peer is not None:
        return f"the container saw {probe.peer}"
    how = "dockerd's placeholder socket accepted the handshake" if probe.connected else probe.detail
    return (f"no answer within {probe.elapsed_s:.1f} s ({how}):\n"
            "      without the proxy, Docker 20.10 forwards nothing over IPv6 to a published port.")


def demo_steps() -> list[DemoStep]:
    return [
        DemoStep("Docker's default (userland-proxy on)", LabConfig(userland_proxy=True), _explain_proxy),
        DemoStep("userland-proxy off, no IPv6 NAT", LabConfig(userland_proxy=False), _explain_no_proxy),
    ]


def run_demo(out: TextIO) -> None:
    def say(line: str) -> None:
        print(line, file=out, flush=True)

    say("v6nat demo: what happens to an IPv6 client's address on its way to a Docker container")
    steps = demo_steps()
    for number, step in enumerate(steps, 1):
        say(f"\n[{number}/{len(steps)}] {step.title}")
        started = time.monotonic()
        with Lab(step.config) as lab:
            say(f"  lab {lab.name}: client {lab.client_addr} --- host {lab.host_addr} "
                f"({lab.public_iface}) with its own dockerd, up in {time.monotonic() - started:.1f} s")
            net = lab.create_network("demo", ULA_SUBNET)
            lab.run_container("web", net, PEER_ECHO_COMMAND, ports={f"{PEER_ECHO_PORT}/tcp": PUBLISHED_PORT})
            say(f"  container 'web' at {lab.container_addr(lab.docker.containers.get('web'), net)} "
                f"on {ULA_SUBNET}, published with -p {PUBLISHED_PORT}:{PEER_ECHO_PORT}; "
                "it answers with the address it sees")
            say(f"  client {lab.client_addr} connects to [{lab.host_addr}]:{PUBLISHED_PORT} ...")
            probe = lab.probe_peer(lab.host_addr, PUBLISHED_PORT)
            say(f"  -> {step.explain(lab, probe)}")
            say("  tearing the lab down ...")
    say("\nv6nat keeps the client's address and needs no proxy: see README.md, 'How it works'.")


def cmd_demo(args: argparse.Namespace) -> int:
    run_demo(sys.stdout)
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo", help="show the problem in a throw-away lab (root)",
        description="Build a hermetic lab (namespaces and a private dockerd), show what a container sees "
                    "of an IPv6 client, and tear everything down (also on Ctrl-C).")
    parser.set_defaults(func=cmd_demo)
