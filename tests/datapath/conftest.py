"""Fixtures for the datapath tests: one compiled Datapath per session (unique
pin path, removed afterwards), emptied and reconfigured before each test."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from v6nat_ebpf.datapath import Datapath, DatapathConfig, NetworkEntry
from v6nat_ebpf.lab.datapath import clear
from dp_packets import HOST, HOST2, LO_IFINDEX, NET, NET_INTERNAL, NET_ROUTED, addr

TEST_CONFIG = DatapathConfig(conntrack_max=16384, dnat_max=4096)


def unique_pin_path(tag: str) -> str:
    return f"/sys/fs/bpf/v6dp-{tag}-{os.getpid()}"


@pytest.fixture(scope="session")
def loaded() -> Iterator[Datapath]:
    if os.geteuid() != 0:
        pytest.fail("datapath tests need root (bpf, tc)")
    pin_path = unique_pin_path("session")
    try:
        dp = Datapath.open(pin_path, TEST_CONFIG)
    except BaseException:  # e.g. bpf/ does not compile: the pin directories it made go too
        Datapath.cleanup(pin_path)
        raise
    try:
        yield dp
    finally:
        dp.close()
        Datapath.cleanup(pin_path)


@pytest.fixture
def dp(loaded: Datapath) -> Datapath:
    """The loaded datapath with empty maps and the test world's hosts and networks (every
    bridge is lo, where BPF_PROG_TEST_RUN runs packets: a network's sources arrive on its bridge)."""
    clear(loaded)
    loaded.set_config(TEST_CONFIG)
    loaded.host_addrs.put(addr(HOST), LO_IFINDEX)
    loaded.host_addrs.put(addr(HOST2), LO_IFINDEX)
    loaded.public_ifaces.put(LO_IFINDEX, addr(HOST))
    loaded.networks.put(NET, NetworkEntry(1, LO_IFINDEX, masquerade=True, icc=True, internal=False, snat_addr=None))
    loaded.networks.put(NET_INTERNAL, NetworkEntry(2, LO_IFINDEX, masquerade=False, icc=True, internal=True,
                                                   snat_addr=None))
    # no masquerade: the model filters such a nat network as routed (Network.datapath_mode)
    loaded.networks.put(NET_ROUTED, NetworkEntry(3, LO_IFINDEX, masquerade=False, icc=True, internal=False,
                                                 snat_addr=None, mode="routed"))
    return loaded
