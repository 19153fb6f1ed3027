"""Hand-written `docker info` / `docker version` / inspect documents in the shapes of Docker 27, 28 and 29,
for engines that cannot run here (Docker 20.10 is the engine of these machines). Only the fields v6nat reads
are filled in; each one's source is named beside it:

- [API] moby api/swagger.yaml (Info, SystemVersion, Network, ContainerInspectResponse, EndpointSettings)
  and api/types/system/info.go (FirewallInfo: Driver, Info; API 1.49 = Docker 28.1).
- [ports] docker/docs content/manuals/engine/network/port-publishing.md ("Gateway modes": the routed
  example's `{"HostIp":"::","HostPort":""}`; host_binding_ipv4 may hold an IPv6 address).
- [bridge] docker/docs content/manuals/engine/network/drivers/bridge.md (driver options
  com.docker.network.bridge.gateway_mode_ipv6, enable_ip_masquerade, ...).
- [rel27] [rel28] [rel29] the Engine release notes: 27.0 (ip6tables on by default, gateway_mode_ipv6
  nat|routed), 28.0 (nat-unprotected, isolated, --ipv4=false IPv6-only networks, gw-priority,
  loopback/link-local publishing), 28.1 (FirewallBackend in info), 29.0 (nftables backend, experimental).
"""

from __future__ import annotations

from typing import Any

NET_ID_NAT = "a" * 64
NET_ID_ROUTED = "b" * 64
NET_ID_V6ONLY = "c" * 64


def version(engine: str) -> dict[str, Any]:
    return {"Version": engine, "ApiVersion": {"27": "1.46", "28": "1.49", "29": "1.52"}[engine.split(".")[0]]}  # [API] SystemVersion


INFO = {
    "27": {"ServerVersion": "27.5.1"},  # [API] Info; no FirewallBackend before API 1.49 [rel28]
    "28": {"ServerVersion": "28.3.3",
           "FirewallBackend": {"Driver": "iptables"}},  # [API] FirewallInfo.Driver, API 1.49 (28.1) [rel28]
    "29": {"ServerVersion": "29.0.1",
           "FirewallBackend": {"Driver": "nftables",  # [rel29] experimental nftables backend
                               "Info": [["ReloadedAt", "2025-11-20T10:00:00Z"]]}},  # [API] label/value pairs
}


def network(net_id: str, name: str, subnet: str, options: dict[str, str], enable_ipv4: bool = True,
            internal: bool = False) -> dict[str, Any]:
    return {
        "Id": net_id, "Name": name, "Driver": "bridge",  # [API] Network
        "EnableIPv6": True,  # [API] Network.EnableIPv6
        "EnableIPv4": enable_ipv4,  # [API] Network.EnableIPv4 (API 1.48, Docker 28 [rel28] --ipv4=false)
        "Internal": internal,  # [API] Network.Internal
        "IPAM": {"Config": [{"Subnet": subnet}]},  # [API] IPAM.Config[].Subnet (no IPv4 pool if IPv6-only)
        "Options": options,  # [bridge] driver options
    }


NETWORKS_28 = [
    network(NET_ID_NAT, "web-nat", "fd00:28::/64", {}),
    network(NET_ID_ROUTED, "web-gua", "2001:db8:28::/64",
            {"com.docker.network.bridge.gateway_mode_ipv6": "routed"}),  # [bridge] [rel27]
    network(NET_ID_V6ONLY, "v6only", "fd00:29::/64",
            {"com.docker.network.bridge.host_binding_ipv4": "2001:db8:1::5"},  # [ports] an IPv6 default binding
            enable_ipv4=False),
]


def endpoint(net_id: str, addr: str, gw_priority: int = 0) -> dict[str, Any]:
    return {"NetworkID": net_id, "GlobalIPv6Address": addr,  # [API] EndpointSettings
            "GwPriority": gw_priority}  # [API] EndpointSettings.GwPriority (API 1.48, Docker 28 [rel28])


def container(name: str, networks: dict[str, dict[str, Any]], ports: dict[str, list[dict[str, str]]],
              port_bindings: dict[str, list[dict[str, str]]] | None = None) -> dict[str, Any]:
    return {
        "Id": name * 8, "Name": "/" + name,  # [API] ContainerInspectResponse
        "State": {"Running": True, "Restarting": False, "Pid": 4242},  # [API] ContainerState
        "Config": {"Labels": {}},
        "HostConfig": {"PortBindings": port_bindings or {}},  # [API] HostConfig.PortBindings (what was asked)
        "NetworkSettings": {"Networks": networks,  # [API] NetworkSettings.Networks
                            "Ports": ports,  # [API] NetworkSettings.Ports (what Docker bound)
                            "SandboxKey": f"/var/run/docker/netns/{name}"},
    }


# Docker 28, `docker run --network name=web-gua,gw-priority=1 --network web-nat -p 8080:80 ...`: on a routed
# network the IPv6 binding has no host port [ports]; the nat network's IPv4/IPv6 bindings as usual.
DUAL = container(
    "dual",
    {"web-nat": endpoint(NET_ID_NAT, "fd00:28::2"), "web-gua": endpoint(NET_ID_ROUTED, "2001:db8:28::2", 1)},
    {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": ""}]},
    {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
)
# Docker 28: loopback and link-local bindings are host-local [rel28] [ports].
LOCAL_ONLY = container(
    "local",
    {"web-nat": endpoint(NET_ID_NAT, "fd00:28::3")},
    {"81/tcp": [{"HostIp": "::1", "HostPort": "8081"}], "82/tcp": [{"HostIp": "fe80::1", "HostPort": "8082"}],
     "83/tcp": [{"HostIp": "::", "HostPort": "8083"}]},
)
# Docker 28 IPv6-only network (--ipv4=false) [rel28]: only IPv6 bindings exist.
V6ONLY = container(
    "v6only",
    {"v6only": endpoint(NET_ID_V6ONLY, "fd00:29::2")},
    {"53/udp": [{"HostIp": "2001:db8:1::5", "HostPort": "5353"}]},  # bound where host_binding_ipv4 says
)
