"""Named network namespaces and veth pairs for the datapath tests, removed on
teardown (also when a test fails). Names start with "v6dp-" and the pid; plus
the servers and clients the namespace tests run in them (socat)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from ipaddress import IPv6Address
from typing import Iterator

from peer_echo import UDP_PEER_ECHO

from v6nat_ebpf.datapath import Datapath
from v6nat_ebpf.datapath.maps import VethEntry


def sh(*args: str, netns: str | None = None, check: bool = True, stdin: str = "") -> subprocess.CompletedProcess[str]:
    cmd = (["ip", "netns", "exec", netns] if netns else []) + list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=60, input=stdin)


@contextmanager
def namespaces(*tags: str) -> Iterator[list[str]]:
    names = [f"v6dp-{tag}-{os.getpid()}" for tag in tags]
    try:
        for name in names:
            sh("ip", "netns", "add", name)
            sh("ip", "link", "set", "lo", "up", netns=name)
        yield names
    finally:
        for name in names:
            sh("ip", "netns", "del", name, check=False)


class World:
    def __init__(self, names: list[str]) -> None:
        self.cli, self.host, self.ctr, *self.more = names  # outside, host, container(s)
        self.procs: list[subprocess.Popen[bytes]] = []

    def serve(self, ns: str, *cmd: str) -> None:
        self.procs.append(subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL))

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()

    def ask(self, ns: str, target: str, udp: bool = False) -> str:
        """The peer address a peer-echo server saw, retried while servers start."""
        kind = "UDP6" if udp else "TCP6"
        for _ in range(20):
            r = sh("socat", "-T1", "-", f"{kind}:{target}", netns=ns, check=False, stdin="hello\n")
            if r.stdout.strip():
                return str(IPv6Address(r.stdout.strip().strip("[]")))
            time.sleep(0.1)
        raise AssertionError(f"no answer from {target} in {ns}: {r.stderr}")


def peer_echo(proto: str, port: int) -> list[str]:
    """A server that answers with the address it saw the client come from."""
    if proto == "udp":
        return [sys.executable, "-c", UDP_PEER_ECHO, str(port)]
    return ["socat", "-T5", f"TCP6-LISTEN:{port},fork,reuseaddr", "SYSTEM:echo $SOCAT_PEERADDR"]


def link(ns: str, dev: str) -> dict:
    return json.loads(sh("ip", "-j", "link", "show", dev, netns=ns).stdout)[0]


def link_mac(ns: str, dev: str) -> bytes:
    return bytes.fromhex(link(ns, dev)["address"].replace(":", ""))


def describe_veth(dp: Datapath, ns: str, port: str, bridge: str, network_id: int, addrs: tuple[str, ...],
                  icc: bool = True, masquerade: bool = True, internal: bool = False) -> None:
    """Tell the datapath what the control plane would: the host side `port` of
    a container's veth (in `ns`) belongs to `bridge` and network `network_id`
    and may send from `addrs` (v6nat_veth_ingress drops every IPv6 packet of
    a veth it was not told about). Call it once the bridge's ports are all
    attached: a bridge without a set address takes one from its ports."""
    dp.veths.put(link(ns, port)["ifindex"], VethEntry(
        network_id=network_id, bridge_ifindex=link(ns, bridge)["ifindex"], masquerade=masquerade, icc=icc,
        internal=internal, addrs=tuple(IPv6Address(a) for a in addrs), bridge_mac=link_mac(ns, bridge)))
