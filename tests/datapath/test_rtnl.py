"""v6nat_ebpf.rtnl, the daemon's own rtnetlink requests (issue 15: pyroute2 left the daemon), against the
kernel in a throw-away namespace, checked with iproute2's view of the same objects.

tc (clsact, bpf filters) is proven by test_tc.py and test_netns.py, the nsid query by
tests/control/test_reconciler.py, neighbour renewal by tests/e2e/test_replaced_container.py.
"""

from __future__ import annotations

import errno
import json
import select
import socket
from ipaddress import IPv6Address
from typing import Iterator

import pytest

from v6nat_ebpf import rtnl
from v6nat_ebpf.rtnl import NetlinkError, Rtnl
from netns_world import namespaces, sh


@pytest.fixture
def ns() -> Iterator[str]:
    with namespaces("rtnl") as (name,):
        sh("ip", "link", "add", "br9", "type", "bridge", netns=name)
        sh("ip", "link", "add", "ve9", "type", "veth", "peer", "name", "ve9p", netns=name)
        sh("ip", "link", "set", "ve9", "master", "br9", netns=name)
        for dev in ("br9", "ve9", "ve9p"):
            sh("ip", "link", "set", dev, "up", netns=name)
        sh("ip", "-6", "addr", "add", "2001:db8:9::1/64", "dev", "br9", "nodad", netns=name)
        sh("ip", "-6", "addr", "add", "2001:db8:9::2/64", "dev", "br9", "nodad", "preferred_lft", "0", netns=name)
        yield name


def test_links_are_what_iproute2_lists(ns: str) -> None:
    with Rtnl(ns) as nl:
        got = {rtnl.text(m.attrs.get(rtnl.IFLA_IFNAME)): (
            m["index"], rtnl.u32(m.attrs.get(rtnl.IFLA_MASTER)),
            rtnl.text(rtnl.nested(m.attrs.get(rtnl.IFLA_LINKINFO)).get(rtnl.IFLA_INFO_KIND)) or "",
            m.attrs.get(rtnl.IFLA_ADDRESS).hex(":")) for m in nl.links()}
        assert nl.link(ifname="ve9")["index"] == got["ve9"][0]
        assert rtnl.text(nl.link(got["br9"][0]).attrs.get(rtnl.IFLA_IFNAME)) == "br9"
    shown = json.loads(sh("ip", "-d", "-j", "link", "show", netns=ns).stdout)
    index_of = {link["ifname"]: link["ifindex"] for link in shown}
    want = {link["ifname"]: (link["ifindex"], index_of.get(link.get("master")),
                             (link.get("linkinfo") or {}).get("info_kind", ""), link.get("address"))
            for link in shown}
    assert got == want
    assert got["ve9"][1:3] == (got["br9"][0], "veth") and got["br9"][2] == "bridge"


def test_ipv6_addresses_carry_scope_and_flags(ns: str) -> None:
    with Rtnl(ns) as nl:
        found = {IPv6Address(m.attrs[rtnl.IFA_ADDRESS]): (m["scope"], rtnl.u32(m.attrs.get(rtnl.IFA_FLAGS)) or m["flags"])
                 for m in nl.addresses(socket.AF_INET6)}
    deprecated = 0x20
    assert found[IPv6Address("2001:db8:9::1")][0] == 0  # universe
    assert not found[IPv6Address("2001:db8:9::1")][1] & deprecated
    assert found[IPv6Address("2001:db8:9::2")][1] & deprecated


def test_a_refused_request_is_a_netlink_error_with_its_errno(ns: str) -> None:
    with Rtnl(ns) as nl:
        with pytest.raises(NetlinkError) as refused:
            nl.link(ifname="nosuchdev")
        assert refused.value.code == errno.ENODEV
        with pytest.raises(NetlinkError) as missing:
            nl.neighbour(nl.link(ifname="br9")["index"], IPv6Address("2001:db8:9::99").packed)
        assert missing.value.code == errno.ENOENT


def test_neighbour_entries_read_and_replaced(ns: str) -> None:
    sh("ip", "-6", "neigh", "add", "2001:db8:9::7", "lladdr", "02:00:00:00:00:07", "dev", "br9", "nud", "stale",
       netns=ns)
    sh("ip", "-6", "neigh", "add", "2001:db8:9::8", "lladdr", "02:00:00:00:00:08", "dev", "br9", "nud", "permanent",
       netns=ns)
    with Rtnl(ns) as nl:
        br9 = nl.link(ifname="br9")["index"]
        assert nl.neighbour(br9, IPv6Address("2001:db8:9::7").packed)["state"] == 0x04  # NUD_STALE
        assert nl.neighbour(br9, IPv6Address("2001:db8:9::8").packed)["state"] & rtnl.NUD_PERMANENT
        nl.neighbour_replace(br9, IPv6Address("2001:db8:9::7").packed, rtnl.NUD_NONE)
        assert nl.neighbour(br9, IPv6Address("2001:db8:9::7").packed)["state"] == rtnl.NUD_NONE


def test_the_monitor_socket_wakes_on_an_address_change(ns: str) -> None:
    with Rtnl(ns, groups=rtnl.RTMGRP_LINK | rtnl.RTMGRP_IPV6_IFADDR) as nl:
        assert select.select([nl.fileno()], [], [], 0.2)[0] == []
        sh("ip", "-6", "addr", "add", "2001:db8:9::3/64", "dev", "br9", "nodad", netns=ns)
        assert select.select([nl.fileno()], [], [], 5)[0] == [nl.fileno()]
        assert nl.drain() >= 1
        assert select.select([nl.fileno()], [], [], 0.2)[0] == []
