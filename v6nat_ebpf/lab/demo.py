"""`v6nat demo`: the problem v6nat solves, shown in a throw-away lab.

The demo is a list of steps run in order inside one lab; each step prints a
progress line and what it saw. The last step (`show_v6nat`) starts `v6nat run`
as a process in its lab and shows the client's own address arriving.

Imports: stdlib, lab.world and lab.daemon; no datapath (the daemon is a separate process).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import re
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, TextIO

from v6nat_ebpf.lab.common import PEER_ECHO_COMMAND, PEER_ECHO_PORT, LabConfig

if TYPE_CHECKING:  # the lab's world (and the Docker SDK) load only when the demo runs: `v6nat run` registers this module
    from v6nat_ebpf.lab.world import Lab, PeerProbe

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
    from v6nat_ebpf.lab.world import Lab

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
    say(f"\n[{len(steps) + 1}/{len(steps) + 1}] userland-proxy off, with v6nat")
    show_v6nat(say)
    say("\nv6nat keeps the client's address and needs no proxy: see README.md, 'How it works'.")


# The web server of the v6nat step also logs each peer, so `docker logs` shows what the container saw.
LOGGING_ECHO_COMMAND = ["socat", f"TCP6-LISTEN:{PEER_ECHO_PORT},fork,reuseaddr",
                        "SYSTEM:echo $SOCAT_PEERADDR; echo connection from $SOCAT_PEERADDR >&2"]
OUTSIDE_PORT = 7000
DEMO_METRICS = ("v6nat_translations_total", "v6nat_mapping_packets_total", "v6nat_conntrack_flows")


def _compact(text: str) -> str:
    """socat prints IPv6 addresses in full ([2001:0db8:0001:...]); show them as people write them."""
    return re.sub(r"\[([0-9a-fA-F:]+)\]", lambda m: str(ipaddress.IPv6Address(m[1])), text)


def show_v6nat(say: Callable[[str], None]) -> None:
    """One lab: the problem, then v6nat started, the client's own address in the container's log,
    an outbound request arriving from the host's address, `v6nat status` and a few metrics."""
    from v6nat_ebpf.lab.daemon import LabDaemon
    from v6nat_ebpf.lab.world import Lab

    started = time.monotonic()
    with Lab(LabConfig(userland_proxy=False, iptables=False)) as lab:
        say(f"  lab {lab.name} up in {time.monotonic() - started:.1f} s (Docker's iptables and proxy off)")
        net = lab.create_network("demo", ULA_SUBNET)
        web = lab.run_container("web", net, LOGGING_ECHO_COMMAND, ports={f"{PEER_ECHO_PORT}/tcp": PUBLISHED_PORT})
        say(f"  container 'web' at {lab.container_addr(web, net)}, -p {PUBLISHED_PORT}:{PEER_ECHO_PORT}")
        before = lab.probe_peer(lab.host_addr, PUBLISHED_PORT, timeout_s=2)
        say(f"  without v6nat, client -> [{lab.host_addr}]:{PUBLISHED_PORT}: "
            + (f"the container saw {before.peer}" if before.peer else "no answer (the problem)"))
        say("  starting `v6nat run` (bcc compiles and loads the TC programs) ...")
        # Leaving the block (also on Ctrl-C or a failure) stops v6nat and runs `v6nat cleanup`.
        with LabDaemon(lab, extra=("--log-level", "info")) as daemon:
            daemon.start(timeout=60)  # well inside `make test`'s 120 s for the whole demo
            say(f"  v6nat ready in {time.monotonic() - started:.1f} s since the lab came up")
            after = lab.probe_peer(lab.host_addr, PUBLISHED_PORT)
            say(f"  with v6nat, client {lab.client_addr} -> [{lab.host_addr}]:{PUBLISHED_PORT}: answered {after.peer}")
            log_lines = [line for line in web.logs().decode(errors="replace").splitlines() if "connection from" in line]
            say(f"  container log: {_compact(log_lines[-1].strip()) if log_lines else '(nothing logged)'}")
            lab.popen(lab.client_ns, ["socat", f"TCP6-LISTEN:{OUTSIDE_PORT},fork,reuseaddr",
                                      "SYSTEM:echo $SOCAT_PEERADDR"])
            time.sleep(0.3)
            code, out = web.exec_run(["socat", "-T3", "-", f"TCP6:[{lab.client_addr}]:{OUTSIDE_PORT}"])
            seen = _compact(out.decode(errors="replace").strip()) if code == 0 else f"failed ({code})"
            say(f"  outbound: container -> outside server [{lab.client_addr}]:{OUTSIDE_PORT}, which saw {seen} "
                f"(the host's address is {lab.host_addr})")
            status = daemon.cli("status", "--metrics-listen", daemon.listen, "--pin-path", lab.pin_path, check=False)
            say("  v6nat status:")
            for line in (status.stdout or status.stderr).splitlines():
                say(f"    {line}")
            metrics = [line for line in daemon.get("/metrics", check=False).splitlines()
                       if line.startswith(DEMO_METRICS)]
            say("  a few metrics (GET /metrics):")
            for line in metrics[:12]:
                say(f"    {line}")
        say("  v6nat stopped and `v6nat cleanup` run; tearing the lab down ...")


def cmd_demo(args: argparse.Namespace) -> int:
    run_demo(sys.stdout)
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo", help="show the problem in a throw-away lab (root)",
        description="Build a hermetic lab (namespaces and a private dockerd), show what a container sees "
                    "of an IPv6 client, and tear everything down (also on Ctrl-C).")
    parser.set_defaults(func=cmd_demo)
