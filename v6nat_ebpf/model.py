"""What v6nat should program, derived from Docker's and the host's state as plain values.

Lives here: frozen dataclasses for Docker networks, endpoints and published
ports, for the host's public interfaces, and the `DesiredState` the reconciler
makes the BPF maps equal to; and the pure functions that build them from plain
dicts of Docker inspect data (`docker_state_from_inspect`) and from host facts
(`desired_state`). Every Docker semantic v6nat honours is decided here, so the
sources only fetch and the reconciler only writes.

Must not import: docker, pyroute2, bcc, or anything of v6nat_ebpf but errors
(stdlib only).

Decisions (also in README.md, "Docker semantics", and docs/docker.md):
- Managed network: bridge driver, EnableIPv6, at least one IPv6 subnet, ULA
  or global (link-local and multicast ones are no subnets). Each has Docker's
  gateway mode (`com.docker.network.bridge.gateway_mode_ipv6`, Docker 27/28):
  `nat` (the default, also for global subnets, as Docker 27+ does), `routed`
  (no NAT; from outside only published container ports), `nat-unprotected`
  (NAT; any port reachable directly) or `isolated` (internal, and not even
  the host reaches it). An unknown mode is reported and taken as `nat`.
  A routed network does not masquerade, whatever enable_ip_masquerade says.
  A `nat` network with enable_ip_masquerade=false is filtered as `routed`
  (`Network.datapath_mode`): Docker 28 drops direct routing to its unpublished
  ports too (only `nat-unprotected` opens them); its published ports are
  reachable both at the host port (DNAT) and at the container's own address
  and port.
- In a routed network a published port is the container's own port at its
  own address (Docker: "a host port in a -p mapping is not used, and the
  host address is only used to decide whether to apply the mapping to IPv4
  or IPv6"), so its PortMapping has host_addr = the container's address and
  host_port = the container port; the binding's HostPort may be empty.
- Published ports come from the actual bindings (NetworkSettings.Ports), so
  ephemeral ports (`-p 80`, `-P`) and ports Docker picked from a range are
  the ones Docker really bound.
- A binding's HostIp: "" or "::" means every host address (or the network's
  default binding address: docker-ipv6nat's
  `com.docker.network.bridge.host_binding_ipv6`, else Docker's
  `com.docker.network.bridge.host_binding_ipv4` when it holds an IPv6
  address, as Docker 28 documents); a global IPv6 address means only that
  one; `::1` (Docker 28's `-p [::1]:8080:80`, or a `::1` default binding)
  means the host's own processes only (host-local access, bpf/sock.c: never
  from outside, as the TC programs translate host addresses only, and in a
  routed network it opens no container port); other loopback, link-local
  and IPv4-mapped addresses never reach a public interface and are ignored.
- An IPv4 binding (`0.0.0.0`) gives no IPv6 mapping when the user asked for an
  IPv4 address (`-p 0.0.0.0:8080:80`). Docker 20.10 and later list a `::`
  binding next to `0.0.0.0` for a plain `-p 8080:80`; when Docker lists only
  `0.0.0.0` for a port whose requested HostIp was empty (older engines, or an
  engine with IPv6 binding off), it is treated as `::`, as the user meant
  "every address". Any other IPv4 address gives no IPv6 mapping.
- A container on several managed networks is published on exactly one: the
  one whose endpoint has the highest `GwPriority` (Docker 28's
  `--network name=...,gw-priority=N`, 0 when absent), among those the network
  named (or id given) in its label `v6nat.network` if it is on it, otherwise
  the one whose name sorts first. Internal networks are never chosen: Docker
  does not publish ports on them.
- Every port of a managed network's bridge (the host side of its
  containers' veths) carries the datapath's veth program: the fast path of
  established flows starts there, and with `enable_icc=false` it drops
  container to container traffic; the network's gateway, the one address
  containers may still reach on it, is the bridge's own address in the
  subnet, read from the host (Docker's inspect data leaves the IPv6 gateway
  out when it picked it).
- Every such veth is described to the datapath (`VethPolicy`, its veths map
  entry): the network and bridge it is a port of, and the addresses its
  container owns there (Docker's GlobalIPv6Address of that network), the only
  sources, with link-local and `::`, its packets may carry. A veth belongs to
  the running container whose network namespace (Docker's SandboxKey, else
  its pid) the host knows under the veth's peer netnsid, attached to the
  network of the veth's bridge. A veth no container owns gets no entry: the
  datapath drops its IPv6 (fail-closed). A container without an IPv6 address
  on the network gets an entry without addresses (link-local only).
- The container addresses Docker lists (`DesiredState.container_addrs`, with
  the container's id) are what conntrack may keep flows of: when one goes
  (or passes to another container), the reconciler forgets its flows.
- Mapping ids and network ids are hashes of what identifies them (the
  published (proto, host address, host port); the Docker network id), so a
  restarted daemon or a replaced container keeps the same ids and counters.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, replace
from ipaddress import IPv6Address, IPv6Network
from typing import Any, Iterable, Mapping

# IP protocol numbers and the names v6nat writes them with (Docker port specs, metrics labels, status,
# flows): the one copy.
PROTOCOL_NAMES = {6: "tcp", 17: "udp", 58: "icmpv6"}
PROTOCOL_NUMBERS = {name: number for number, name in PROTOCOL_NAMES.items()}
DOCKER_PROTOCOLS = ("tcp", "udp")  # what a published port can be (Docker's sctp is not translated)


def protocol_name(proto: int) -> str:
    """IP protocol number -> "tcp", "udp", "icmpv6" (or the number as text for any other)."""
    return PROTOCOL_NAMES.get(proto, str(proto))

NETWORK_LABEL = "v6nat.network"

OPT_MASQUERADE = "com.docker.network.bridge.enable_ip_masquerade"
OPT_ICC = "com.docker.network.bridge.enable_icc"
OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
HOST_ONLY_ADDR = IPv6Address("::1")  # a binding for the host's own processes (host-local access)
OPT_HOST_IPV6 = "com.docker.network.host_ipv6"  # Docker 28: SNAT source address
OPT_HOST_BINDING_IPV6 = "com.docker.network.bridge.host_binding_ipv6"  # docker-ipv6nat
OPT_HOST_BINDING_IPV4 = "com.docker.network.bridge.host_binding_ipv4"  # Docker; may hold an IPv6 address (28)
OPT_GATEWAY_MODE_IPV6 = "com.docker.network.bridge.gateway_mode_ipv6"  # Docker 27 (nat, routed), 28 (the rest)

# Docker's gateway modes (docker/docs engine/network/port-publishing.md, "Gateway modes").
GATEWAY_NAT = "nat"
GATEWAY_ROUTED = "routed"
GATEWAY_UNPROTECTED = "nat-unprotected"
GATEWAY_ISOLATED = "isolated"
GATEWAY_MODES = (GATEWAY_NAT, GATEWAY_ROUTED, GATEWAY_UNPROTECTED, GATEWAY_ISOLATED)

# v6nat's own network option (`docker network create -o v6nat.udp_filtering=...`), RFC 4787 REQ-8's choice.
OPT_UDP_FILTERING = "v6nat.udp_filtering"
UDP_FILTERINGS = ("address-and-port-dependent", "endpoint-independent")  # the first: the default


@dataclass(frozen=True)
class Network:
    """A managed Docker network: a bridge with IPv6 on at least one subnet (ULA or global)."""

    id: str
    name: str
    bridge: str
    subnets: tuple[IPv6Network, ...]  # its IPv6 subnets
    masquerade: bool = True
    icc: bool = True
    internal: bool = False  # also for mode isolated
    snat_addr: IPv6Address | None = None  # None: the public interface's address
    host_binding: IPv6Address | None = None  # the address "::" bindings mean, None: every address
    mode: str = GATEWAY_NAT  # one of GATEWAY_MODES
    udp_filtering: str | None = None  # one of UDP_FILTERINGS, None: the host-wide `--udp-filtering`

    @property
    def network_id(self) -> int:
        """A stable non-zero 32-bit id for the datapath, from the Docker network id."""
        return _u32_id(self.id)

    @property
    def datapath_mode(self) -> str:
        """The gateway mode the datapath filters this network by: a `nat` network that does not masquerade
        takes direct routing to its published container ports only, as `routed` does."""
        return GATEWAY_ROUTED if self.mode == GATEWAY_NAT and not self.masquerade else self.mode


# (container id, network name, address): a container replaced at the same address is a new one.
EndpointKey = tuple[str, str, IPv6Address]


@dataclass(frozen=True, order=True, slots=True)
class Endpoint:
    """A running container's address on a managed network."""

    container_id: str
    container_name: str
    network_name: str
    address: IPv6Address

    @property
    def key(self) -> EndpointKey:
        return (self.container_id, self.network_name, self.address)


@dataclass(frozen=True, slots=True)
class PortMapping:
    """One published port: (proto, host address or any, host port) -> container address and port."""

    proto: int
    host_addr: IPv6Address | None  # None: every host address
    host_port: int
    container_addr: IPv6Address
    container_port: int
    container_name: str
    network_name: str

    @property
    def key(self) -> tuple[int, IPv6Address | None, int]:
        return (self.proto, self.host_addr, self.host_port)

    @property
    def mapping_id(self) -> int:
        """Stable across restarts and container replacements: a hash of the published key."""
        return _u32_id(f"{self.proto}/{self.host_addr or '::'}/{self.host_port}")

    def __str__(self) -> str:
        proto = protocol_name(self.proto)
        host = f"[{self.host_addr}]" if self.host_addr else "[::]"
        return (f"{proto} {host}:{self.host_port} -> [{self.container_addr}]:{self.container_port}"
                f" ({self.container_name} on {self.network_name})")


# A container's network namespace as Docker names it: (SandboxKey, State.Pid); "" / 0 when unknown.
NetnsRef = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Sandbox:
    """A running container's network namespace and its IPv6 addresses on each managed network it is
    attached to (with or without an address): what its veths may send."""

    container_id: str
    container_name: str
    key: str  # SandboxKey: the netns file dockerd bind-mounted ("" when Docker gives none)
    pid: int  # State.Pid, in dockerd's pid namespace (0: unknown)
    networks: tuple[tuple[str, tuple[IPv6Address, ...]], ...]  # (Docker network id, its addresses there)

    @property
    def netns(self) -> NetnsRef:
        return (self.key, self.pid)

    def addresses_on(self, network_id: str) -> tuple[IPv6Address, ...] | None:
        """Its addresses on a network (maybe none), or None when it is not attached to it."""
        return next((addrs for net_id, addrs in self.networks if net_id == network_id), None)


@dataclass(frozen=True)
class DockerState:
    """What Docker says: managed networks, endpoints of running containers, published ports."""

    networks: tuple[Network, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    mappings: tuple[PortMapping, ...] = ()
    problems: tuple[str, ...] = ()  # things ignored, one line each, for the log
    sandboxes: tuple[Sandbox, ...] = ()  # running containers attached to a managed network


@dataclass(frozen=True)
class PublicInterface:
    """A public interface and its global IPv6 addresses (the preferred one first)."""

    ifindex: int
    name: str
    addresses: tuple[IPv6Address, ...]

    @property
    def snat_addr(self) -> IPv6Address | None:
        return self.addresses[0] if self.addresses else None


@dataclass(frozen=True)
class Link:
    """A network interface of the host: bridges, the veths enslaved to them (containers' host sides) and the rest."""

    name: str
    ifindex: int
    master: int | None = None  # the bridge it is enslaved to
    addresses: tuple[IPv6Address, ...] = ()  # its global IPv6 addresses
    kind: str = ""  # netlink's IFLA_INFO_KIND: "veth", "bridge", ... ("" for physical devices)
    peer_netnsid: int | None = None  # IFLA_LINK_NETNSID: a veth's peer lives in that other namespace
    mac: bytes | None = None  # IFLA_ADDRESS (6 bytes for Ethernet devices)


@dataclass(frozen=True)
class HostState:
    """What netlink says: the public interfaces and every link that exists (bridges among them)."""

    public: tuple[PublicInterface, ...] = ()
    links: tuple[Link, ...] = ()
    netns_ids: tuple[tuple[NetnsRef, int], ...] = ()  # containers' namespaces -> the host's nsid for them

    def nsid_of(self, netns: NetnsRef) -> int | None:
        return next((nsid for ref, nsid in self.netns_ids if ref == netns), None)

    def link(self, name: str) -> Link | None:
        return next((link for link in self.links if link.name == name), None)

    def ifindex(self, name: str) -> int | None:
        link = self.link(name)
        return link.ifindex if link else None

    def veths_of(self, bridge_ifindex: int) -> tuple[str, ...]:
        """The names of the veths enslaved to a bridge whose peer is in another namespace: containers'
        host sides (the veth program delivers into a container through that peer)."""
        return tuple(link.name for link in self.veth_links_of(bridge_ifindex))

    def veth_links_of(self, bridge_ifindex: int) -> tuple[Link, ...]:
        """The Links of veths_of, by name."""
        return tuple(sorted((link for link in self.links if link.master == bridge_ifindex
                             and link.kind == "veth" and link.peer_netnsid is not None), key=lambda l: l.name))


@dataclass(frozen=True, order=True)
class NetworkRoute:
    """One entry of the datapath's networks map: a managed prefix (ULA or global) and how to treat it."""

    prefix: IPv6Network
    network_id: int
    bridge_ifindex: int
    masquerade: bool
    icc: bool
    internal: bool
    snat_addr: IPv6Address | None
    gateway: IPv6Address | None = None  # the bridge's address in the prefix (passes with icc=False)
    mode: str = GATEWAY_NAT
    name: str = ""  # the Docker network's name (status and metrics only)
    udp_eif: bool = False  # UDP filtering endpoint-independent (full cone)


# What the datapath's veth_info holds at most (bpf/v6nat.h V6NAT_VETH_ADDRS).
VETH_ADDRS_MAX = 4


@dataclass(frozen=True, order=True)
class VethPolicy:
    """One entry of the datapath's veths map: the host side of a container's veth, what it may send."""

    network_id: int
    bridge_ifindex: int
    masquerade: bool
    icc: bool
    internal: bool
    addrs: tuple[IPv6Address, ...]  # the container's addresses on the network (at most VETH_ADDRS_MAX)
    bridge_mac: bytes  # 6 bytes
    mode: str = GATEWAY_NAT


@dataclass(frozen=True)
class DesiredState:
    """Exactly what the datapath maps and attachments should hold."""

    mappings: tuple[PortMapping, ...] = ()
    routes: tuple[NetworkRoute, ...] = ()
    public_ifaces: tuple[tuple[int, IPv6Address], ...] = ()  # (ifindex, snat address)
    host_addrs: tuple[tuple[IPv6Address, int], ...] = ()  # (address, ifindex)
    bridges: tuple[str, ...] = ()  # bridge ifnames that must carry our programs
    veths: tuple[str, ...] = ()  # veths on managed networks' bridges (containers' host sides): the veth program
    public_names: tuple[str, ...] = ()  # public ifnames that must carry our programs
    problems: tuple[str, ...] = ()
    veth_policies: tuple[tuple[int, VethPolicy], ...] = ()  # (veth ifindex, entry), the veths a container owns
    unowned_veths: tuple[str, ...] = ()  # veths of `veths` no running container owns (yet): no entry, dropped
    container_addrs: tuple[tuple[str, IPv6Address], ...] = ()  # (container id, address) of every endpoint

    @property
    def mapping_ids(self) -> frozenset[int]:
        return frozenset(m.mapping_id for m in self.mappings)

    def interface_roles(self, docker_known: bool = True) -> dict[str, str]:
        """ifname -> the role of the programs it must carry: "public", "bridge" or "veth" (the names of
        datapath.PROGRAMS). Bridges and veths come from Docker: until it answered, only the public ones."""
        roles = {name: "public" for name in self.public_names}
        if docker_known:
            roles.update({name: "veth" for name in self.veths})
            roles.update({name: "bridge" for name in self.bridges})
        return roles


def _u32_id(text: str) -> int:
    value = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "little")
    return value or 1  # 0 means "no mapping" in the datapath


def _opt_bool(options: Mapping[str, str], name: str, default: bool) -> bool:
    raw = options.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def _opt_addr(options: Mapping[str, str], name: str, problems: list[str], net_name: str) -> IPv6Address | None:
    raw = options.get(name)
    if not raw:
        return None
    try:
        return IPv6Address(raw)
    except ValueError:
        problems.append(f"network {net_name}: option {name}={raw!r} is not an IPv6 address, ignored")
        return None


def network_from_inspect(data: Mapping[str, Any], problems: list[str]) -> Network | None:
    """A managed Network from `docker network inspect` data, or None when v6nat does not manage it."""
    if data.get("Driver") != "bridge" or not data.get("EnableIPv6"):
        return None
    subnets = []
    for pool in (data.get("IPAM") or {}).get("Config") or []:
        try:
            subnet = ipaddress.ip_network(pool.get("Subnet", ""), strict=False)
        except ValueError:
            continue
        if isinstance(subnet, IPv6Network) and not (subnet.is_link_local or subnet.is_multicast):
            subnets.append(subnet)
    if not subnets:
        return None
    options = data.get("Options") or {}
    net_id = data["Id"]
    name = data.get("Name") or net_id[:12]
    mode = options.get(OPT_GATEWAY_MODE_IPV6) or GATEWAY_NAT
    if mode not in GATEWAY_MODES:
        problems.append(f"network {name}: option {OPT_GATEWAY_MODE_IPV6}={mode!r} is no gateway mode "
                        f"({', '.join(GATEWAY_MODES)}); taken as {GATEWAY_NAT}")
        mode = GATEWAY_NAT
    return Network(
        id=net_id,
        name=name,
        bridge=options.get(OPT_BRIDGE_NAME) or f"br-{net_id[:12]}",
        subnets=tuple(sorted(subnets)),
        masquerade=mode in (GATEWAY_NAT, GATEWAY_UNPROTECTED) and _opt_bool(options, OPT_MASQUERADE, True),
        icc=_opt_bool(options, OPT_ICC, True),
        internal=bool(data.get("Internal")) or mode == GATEWAY_ISOLATED,
        snat_addr=_opt_addr(options, OPT_HOST_IPV6, problems, name),
        host_binding=_host_binding(options, problems, name),
        mode=mode,
        udp_filtering=_opt_udp_filtering(options, problems, name),
    )


def _host_binding(options: Mapping[str, str], problems: list[str], net_name: str) -> IPv6Address | None:
    """The network's default binding address: docker-ipv6nat's host_binding_ipv6, else Docker's
    host_binding_ipv4 when it holds an IPv6 address ("::" there means every address: None)."""
    if options.get(OPT_HOST_BINDING_IPV6):
        return _opt_addr(options, OPT_HOST_BINDING_IPV6, problems, net_name)
    addr = _addr_or_none(options.get(OPT_HOST_BINDING_IPV4))
    if addr is None or addr == IPv6Address("::"):
        return None
    return addr


def _opt_udp_filtering(options: Mapping[str, str], problems: list[str], net_name: str) -> str | None:
    value = options.get(OPT_UDP_FILTERING)
    if value is None or value in UDP_FILTERINGS:
        return value
    problems.append(f"network {net_name}: {OPT_UDP_FILTERING}={value!r} is not one of {', '.join(UDP_FILTERINGS)}; "
                    f"using {UDP_FILTERINGS[0]}")
    return UDP_FILTERINGS[0]


def _container_name(data: Mapping[str, Any]) -> str:
    return (data.get("Name") or data.get("Id", "")[:12]).lstrip("/")


def _endpoints_of(data: Mapping[str, Any], networks: Mapping[str, Network]) -> list[Endpoint]:
    """The container's IPv6 addresses on managed networks (keyed by network id in `networks`)."""
    found = []
    attached = (data.get("NetworkSettings") or {}).get("Networks") or {}
    for net_name, ep in attached.items():
        network = networks.get(ep.get("NetworkID", ""))
        raw = ep.get("GlobalIPv6Address")
        if network is None or not raw:
            continue
        addr = IPv6Address(raw)
        if any(addr in subnet for subnet in network.subnets):
            found.append(Endpoint(data["Id"], _container_name(data), network.name, addr))
    return found


def _addr_or_none(raw: Any) -> IPv6Address | None:
    try:
        return IPv6Address(raw) if raw else None
    except ValueError:
        return None


def sandbox_of(data: Mapping[str, Any], networks: Mapping[str, Network]) -> Sandbox | None:
    """The container's namespace and its addresses on each managed network it is attached to (keyed by
    network id in `networks`), or None when it is on none."""
    settings = data.get("NetworkSettings") or {}
    attached = []
    for ep in (settings.get("Networks") or {}).values():
        net_id = ep.get("NetworkID", "")
        if net_id not in networks:
            continue
        addr = _addr_or_none(ep.get("GlobalIPv6Address"))
        attached.append((net_id, (addr,) if addr is not None else ()))
    if not attached:
        return None
    pid = (data.get("State") or {}).get("Pid") or 0
    return Sandbox(data["Id"], _container_name(data), settings.get("SandboxKey") or "",
                   pid if isinstance(pid, int) else 0, tuple(sorted(attached)))


def choose_endpoint(data: Mapping[str, Any], endpoints: list[Endpoint], networks_by_name: Mapping[str, Network],
                    problems: list[str]) -> Endpoint | None:
    """The one endpoint a container's ports are published on (see the module docstring)."""
    candidates = sorted((ep for ep in endpoints if not networks_by_name[ep.network_name].internal),
                        key=lambda ep: ep.network_name)
    if not candidates:
        return None
    priorities = {ep.network_name: _gw_priority(data, networks_by_name[ep.network_name]) for ep in candidates}
    top = max(priorities.values())
    candidates = [ep for ep in candidates if priorities[ep.network_name] == top]
    wanted = ((data.get("Config") or {}).get("Labels") or {}).get(NETWORK_LABEL)
    if wanted:
        for ep in candidates:
            network = networks_by_name[ep.network_name]
            if wanted in (network.name, network.id) or (len(wanted) >= 12 and network.id.startswith(wanted)):
                return ep
        problems.append(f"container {_container_name(data)}: label {NETWORK_LABEL}={wanted!r} names no managed "
                        f"network it is on; using {candidates[0].network_name}")
    return candidates[0]


def _gw_priority(data: Mapping[str, Any], network: Network) -> int:
    """The endpoint's GwPriority on `network` (Docker 28, API 1.48 EndpointSettings.GwPriority; 0 when absent)."""
    attached = (data.get("NetworkSettings") or {}).get("Networks") or {}
    for net_name, ep in attached.items():
        if ep.get("NetworkID") == network.id or net_name == network.name:
            value = ep.get("GwPriority") or 0
            return value if isinstance(value, int) else 0
    return 0


def _requested_host_ips(data: Mapping[str, Any], port_spec: str) -> set[str]:
    bindings = ((data.get("HostConfig") or {}).get("PortBindings") or {}).get(port_spec) or []
    return {b.get("HostIp") or "" for b in bindings} or {""}


def _binding_host_addr(host_ip: str, requested: set[str], has_ipv6_binding: bool,
                       network: Network) -> tuple[bool, IPv6Address | None]:
    """(published over IPv6?, host address or None for every address) for one actual binding."""
    try:
        addr = ipaddress.ip_address(host_ip) if host_ip else None
    except ValueError:
        return False, None
    if addr is None or addr == IPv6Address("::"):
        return _default_binding(network)
    if isinstance(addr, ipaddress.IPv4Address):
        # Only a 0.0.0.0 binding of a port the user did not pin to IPv4 stands for "::".
        meant_any = str(addr) == "0.0.0.0" and "" in requested and not has_ipv6_binding
        return _default_binding(network) if meant_any else (False, None)
    if addr == HOST_ONLY_ADDR:
        return True, addr
    if not _is_public(addr):
        return False, None
    return True, addr


def _is_public(addr: IPv6Address) -> bool:
    """Can a binding to `addr` be reached on a public interface? Never for loopback, link-local (Docker 28:
    host-local), IPv4-mapped or multicast addresses."""
    return not (addr.is_loopback or addr.is_link_local or addr.ipv4_mapped is not None or addr.is_multicast)


def _default_binding(network: Network) -> tuple[bool, IPv6Address | None]:
    """What a binding to every address means on `network`: its default binding address, if any."""
    if network.host_binding is None:
        return True, None
    if network.host_binding != HOST_ONLY_ADDR and not _is_public(network.host_binding):
        return False, None
    return True, network.host_binding


def mappings_of(data: Mapping[str, Any], endpoint: Endpoint, network: Network) -> list[PortMapping]:
    """The IPv6 port mappings of one running container published on `endpoint`."""
    result = []
    ports = (data.get("NetworkSettings") or {}).get("Ports") or {}
    for spec, bindings in sorted(ports.items()):
        port_text, _, proto_name = spec.partition("/")
        proto_name = proto_name or "tcp"
        proto = PROTOCOL_NUMBERS[proto_name] if proto_name in DOCKER_PROTOCOLS else None
        if proto is None or not bindings:
            continue
        requested = _requested_host_ips(data, spec)
        has_ipv6 = any(":" in (b.get("HostIp") or "") for b in bindings)
        seen = set()
        for binding in bindings:
            published, host_addr = _binding_host_addr(binding.get("HostIp") or "", requested, has_ipv6, network)
            host_port_text = binding.get("HostPort") or ""
            if network.mode == GATEWAY_ROUTED and published and host_addr != HOST_ONLY_ADDR:
                # The container's own port at its own address; host address and port are not used.
                host_addr, host_port_text = endpoint.address, port_text
            if not published or not host_port_text.isdigit():
                continue
            mapping = PortMapping(proto, host_addr, int(host_port_text), endpoint.address, int(port_text),
                                  endpoint.container_name, network.name)
            direct = None
            if network.mode == GATEWAY_NAT and network.datapath_mode == GATEWAY_ROUTED and host_addr != HOST_ONLY_ADDR:
                # Also the container's own port at its own address, which direct routing may reach.
                direct = replace(mapping, host_addr=endpoint.address, host_port=int(port_text))
            for m in (mapping, direct):
                if m is not None and m.key not in seen:
                    seen.add(m.key)
                    result.append(m)
    return result


def is_running(data: Mapping[str, Any]) -> bool:
    state = data.get("State") or {}
    return bool(state.get("Running")) and not state.get("Restarting")


# The parts of inspect data this module and policy.py read: what DockerSource keeps of each document.
_CONTAINER_NETWORK_FIELDS = ("NetworkID", "GlobalIPv6Address", "GwPriority")
_NETWORK_FIELDS = ("Id", "Name", "Driver", "EnableIPv6", "IPAM", "Internal", "Options")


def container_inspect_subset(data: Mapping[str, Any]) -> dict[str, Any]:
    """The part of `docker container inspect` data that `docker_state_from_inspect` and
    `policy.declarations_from_inspect` read, in the same shape, so both decide exactly as on the whole
    document (tests/control/test_model.py checks it on captured data). A container of 5,000 published
    ports has about 25,000 JSON objects (5.9 MB in Python); what is kept is 2.4 MB: no ExposedPorts, no
    PortBindings without a requested HostIp (`_requested_host_ips` reads them as "" anyway), no IPv4
    binding beside an IPv6 one of the same port (`mappings_of` ignores it then)."""
    state = data.get("State") or {}
    settings = data.get("NetworkSettings") or {}
    ports = {}
    for spec, bindings in (settings.get("Ports") or {}).items():
        bindings = bindings or []
        if any(":" in (b.get("HostIp") or "") for b in bindings):
            bindings = [b for b in bindings if ":" in (b.get("HostIp") or "")]
        ports[spec] = [{"HostIp": b.get("HostIp") or "", "HostPort": b.get("HostPort") or ""} for b in bindings]
    requested = {spec: [{"HostIp": b.get("HostIp") or ""} for b in bindings]
                 for spec, bindings in ((data.get("HostConfig") or {}).get("PortBindings") or {}).items()
                 if any(b.get("HostIp") for b in bindings or [])}
    return {
        "Id": data["Id"],
        "Name": data.get("Name"),
        "State": {"Running": state.get("Running"), "Restarting": state.get("Restarting"), "Pid": state.get("Pid")},
        "Config": {"Labels": (data.get("Config") or {}).get("Labels") or {}},
        "HostConfig": {"PortBindings": requested},
        "NetworkSettings": {
            "SandboxKey": settings.get("SandboxKey"),
            "Ports": ports,
            "Networks": {name: {k: ep.get(k) for k in _CONTAINER_NETWORK_FIELDS if k in ep}
                         for name, ep in (settings.get("Networks") or {}).items()},
        },
    }


def network_inspect_subset(data: Mapping[str, Any]) -> dict[str, Any]:
    """The part of `docker network inspect` data that this module and policy.py read (not the
    containers attached, which `/networks/ID` lists)."""
    return {k: data[k] for k in _NETWORK_FIELDS if k in data}


def docker_state_from_inspect(networks: Iterable[Mapping[str, Any]],
                              containers: Iterable[Mapping[str, Any]]) -> DockerState:
    """DockerState from `docker network inspect` and `docker container inspect` dicts."""
    problems: list[str] = []
    managed = [n for n in (network_from_inspect(d, problems) for d in networks) if n is not None]
    managed.sort(key=lambda n: n.name)
    by_id = {n.id: n for n in managed}
    by_name = {n.name: n for n in managed}
    endpoints: list[Endpoint] = []
    sandboxes: list[Sandbox] = []
    mappings: dict[tuple[int, IPv6Address | None, int], PortMapping] = {}
    for data in sorted(containers, key=_container_name):
        if not is_running(data):
            continue
        sandbox = sandbox_of(data, by_id)
        if sandbox is not None:
            sandboxes.append(sandbox)
        mine = _endpoints_of(data, by_id)
        endpoints.extend(mine)
        chosen = choose_endpoint(data, mine, by_name, problems)
        if chosen is None:
            continue
        for mapping in mappings_of(data, chosen, by_name[chosen.network_name]):
            other = mappings.get(mapping.key)
            if other is not None:
                problems.append(f"{mapping} conflicts with {other}; keeping the latter")
                continue
            mappings[mapping.key] = mapping
    return DockerState(tuple(managed), tuple(sorted(endpoints)), tuple(sorted(mappings.values(), key=_sort_key)),
                       tuple(problems), tuple(sandboxes))


def _sort_key(mapping: PortMapping) -> tuple[int, str, int]:
    return (mapping.proto, str(mapping.host_addr or ""), mapping.host_port)


def desired_state(docker: DockerState, host: HostState, udp_filtering: str = UDP_FILTERINGS[0]) -> DesiredState:
    """Combine Docker's and the host's state into what the maps and attachments must hold.

    A network whose bridge does not exist yet (Docker creates it with the first
    container) gets no route and no attachment until it appears; its
    containers' mappings are kept, as they cannot carry traffic before anyway.
    """
    problems = list(docker.problems)
    routes = []
    bridges = []
    veths: list[str] = []
    policies: dict[int, VethPolicy] = {}
    unowned: list[str] = []
    # The host's nsid of each container's namespace (a veth's peer_netnsid names its container's).
    by_nsid: dict[int, list[Sandbox]] = {}
    for sandbox in docker.sandboxes:
        nsid = host.nsid_of(sandbox.netns)
        if nsid is not None:
            by_nsid.setdefault(nsid, []).append(sandbox)
    for network in docker.networks:
        bridge = host.link(network.bridge)
        if bridge is None:
            continue
        bridges.append(network.bridge)
        veths.extend(host.veths_of(bridge.ifindex))
        for veth in host.veth_links_of(bridge.ifindex):
            owners = [(sb, addrs) for sb in by_nsid.get(veth.peer_netnsid, [])  # type: ignore[arg-type]
                      if (addrs := sb.addresses_on(network.id)) is not None]
            if len(owners) != 1:  # none (not started yet, or gone), or ambiguous: no entry, fail closed
                unowned.append(veth.name)
                continue
            sandbox, addrs = owners[0]
            if len(addrs) > VETH_ADDRS_MAX:
                problems.append(f"container {sandbox.container_name} has {len(addrs)} addresses on "
                                f"{network.name}; only the first {VETH_ADDRS_MAX} may send")
                addrs = addrs[:VETH_ADDRS_MAX]
            policies[veth.ifindex] = VethPolicy(network.network_id, bridge.ifindex, network.masquerade, network.icc,
                                                network.internal, addrs, bridge.mac or bytes(6), network.datapath_mode)
        for subnet in network.subnets:
            gateway = next((addr for addr in bridge.addresses if addr in subnet), None)
            routes.append(NetworkRoute(subnet, network.network_id, bridge.ifindex, network.masquerade, network.icc,
                                       network.internal, network.snat_addr, gateway, network.datapath_mode, network.name,
                                       udp_eif=(network.udp_filtering or udp_filtering) == "endpoint-independent"))
    public_ifaces = []
    host_addrs: dict[IPv6Address, int] = {}
    for iface in host.public:
        if iface.snat_addr is None:
            problems.append(f"public interface {iface.name} has no global IPv6 address yet")
            continue
        public_ifaces.append((iface.ifindex, iface.snat_addr))
        for addr in iface.addresses:
            host_addrs.setdefault(addr, iface.ifindex)
    return DesiredState(
        mappings=docker.mappings,
        routes=tuple(sorted(routes, key=lambda r: (r.prefix.network_address, r.prefix.prefixlen))),
        public_ifaces=tuple(sorted(public_ifaces)),
        host_addrs=tuple(sorted(host_addrs.items())),
        bridges=tuple(sorted(set(bridges))),
        veths=tuple(sorted(set(veths))),
        public_names=tuple(sorted(i.name for i in host.public)),
        problems=tuple(problems),
        veth_policies=tuple(sorted(policies.items())),
        unowned_veths=tuple(sorted(set(unowned))),
        container_addrs=tuple(sorted({(ep.container_id, ep.address) for ep in docker.endpoints})),
    )


def new_endpoints(docker: DockerState, host: HostState,
                  known: frozenset[EndpointKey]) -> list[tuple[int, IPv6Address]]:
    """(bridge ifindex, address) of the endpoints in `docker` that are not in `known`."""
    bridges = {n.name: host.ifindex(n.bridge) for n in docker.networks}
    found = []
    for ep in docker.endpoints:
        ifindex = bridges.get(ep.network_name)
        if ifindex is not None and ep.key not in known:
            found.append((ifindex, ep.address))
    return found
