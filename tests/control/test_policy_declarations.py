"""policy.py, pure: the label syntax, which declaration wins for a mapping, and bad values failing closed."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

import pytest

from v6nat_ebpf.model import DesiredState, PortMapping
from v6nat_ebpf.policy import SourceRules, declarations_from_inspect, parse_prefixes, resolve

OFFICE, HOME, BAD = "2001:db8:1::/48", "2001:db8:2::/48", "2001:db8:bad::/48"


def net(text: str) -> IPv6Network:
    return IPv6Network(text)


def container(name: str, labels: dict[str, str], running: bool = True) -> dict:
    return {"Name": "/" + name, "Config": {"Labels": labels}, "State": {"Running": running}}


def mapping(name: str, port: int, proto: int = 6, network: str = "ula", host_port: int | None = None) -> PortMapping:
    """A published port; host ports (the mapping's identity) differ by container name unless given."""
    host_port = host_port or 10000 + 100 * (ord(name[0]) - ord("a")) + port % 100
    return PortMapping(proto, None, host_port, IPv6Address("fd00::2"), port, name, network)


def resolved(containers: list[dict], mappings: list[PortMapping], networks: list[dict] = (),
             host: str | None = None):
    declarations = declarations_from_inspect(networks, containers)
    return resolve(DesiredState(mappings=tuple(mappings)), declarations, parse_prefixes(host) if host else None)


def rules_of(result, m: PortMapping) -> SourceRules | None:
    return result.rules.get(m.mapping_id)


@pytest.mark.parametrize("text,want", [
    ("2001:db8::/32", ("2001:db8::/32",)),
    (" 2001:db8::/32 , 2001:db8::5 ", ("2001:db8::/32", "2001:db8::5/128")),
    ("::/0", ("::/0",)),
])
def test_prefix_lists_parse(text: str, want: tuple[str, ...]) -> None:
    assert parse_prefixes(text) == tuple(sorted(map(net, want)))


@pytest.mark.parametrize("text", ["", " ", "2001:db8::/32,", "10.0.0.0/8", "2001:db8::1/32", "2001:db8::/zz",
                                  "2001:db8::/129", "example.com"])
def test_bad_prefix_lists_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_prefixes(text)


def test_the_most_specific_allowlist_wins_and_denies_add_up() -> None:
    smtp, submission = mapping("mail", 25), mapping("mail", 587)
    result = resolved([container("mail", {"v6nat.allow": OFFICE, "v6nat.allow.587/tcp": HOME,
                                          "v6nat.deny": BAD, "v6nat.deny.587/tcp": "2001:db8:2:66::/64"})],
                      [smtp, submission], [{"Name": "ula", "Options": {"v6nat.allow": "::/0"}}], host="2001:db8::/32")
    assert rules_of(result, smtp) == SourceRules((net(BAD),), (net(OFFICE),))
    assert rules_of(result, submission) == SourceRules((net("2001:db8:2:66::/64"), net(BAD)), (net(HOME),))


def test_network_then_host_defaults() -> None:
    on_office, on_ula = mapping("a", 80, network="office"), mapping("b", 80, network="ula")
    result = resolved([container("a", {}), container("b", {})], [on_office, on_ula],
                      [{"Name": "office", "Options": {"v6nat.allow": OFFICE}}], host=HOME)
    assert rules_of(result, on_office) == SourceRules((), (net(OFFICE),))
    assert rules_of(result, on_ula) == SourceRules((), (net(HOME),))
    nothing = resolved([container("b", {})], [on_ula])
    assert rules_of(nothing, on_ula) is None and nothing.desired.mappings == (on_ula,)


def test_deny_comes_before_allow_in_the_lookup_entries() -> None:
    rules = SourceRules(deny=(net("2001:db8::/32"), net("2001:db8:1:bad::/64")),
                        allow=(net("2001:db8:1::/48"), net(HOME), net("2a01::/16")))
    # An allow inside a deny can never win: it is left out; a deny inside an allow carves a hole.
    assert dict(rules.entries) == {net("2001:db8::/32"): False, net("2001:db8:1:bad::/64"): False,
                                   net("2a01::/16"): True}
    assert rules.default_deny and not SourceRules(deny=(net(BAD),)).default_deny


def test_equal_rules_share_one_policy_id_and_different_ones_do_not() -> None:
    a, b, c = mapping("a", 80), mapping("b", 80), mapping("c", 80)
    result = resolved([container("a", {"v6nat.allow": OFFICE}), container("b", {"v6nat.allow": OFFICE}),
                       container("c", {"v6nat.allow": HOME})], [a, b, c])
    assert rules_of(result, a).policy_id == rules_of(result, b).policy_id != rules_of(result, c).policy_id


@pytest.mark.parametrize("labels", [{"v6nat.allow": "2001:db8::/zz"}, {"v6nat.deny": "10.0.0.0/8"},
                                    {"v6nat.allow.587": OFFICE}, {"v6nat.allowed": OFFICE},
                                    {"v6nat.allow.70000/tcp": OFFICE}, {"v6nat.allow.53/sctp": OFFICE}])
def test_a_bad_declaration_unpublishes_the_container_only(labels: dict[str, str]) -> None:
    bad, good = mapping("typo", 80), mapping("fine", 80, host_port=9090)
    result = resolved([container("typo", labels), container("fine", {})], [bad, good])
    assert result.desired.mappings == (good,)
    [error] = result.errors
    assert (error.container, error.label, error.value) == ("typo", *next(iter(labels.items())))
    assert "typo" in str(error) and "not published" in str(error)


def test_a_bad_network_option_unpublishes_its_mappings_only() -> None:
    on_bad, elsewhere = mapping("a", 80, network="office"), mapping("b", 80, network="ula", host_port=9090)
    result = resolved([container("a", {}), container("b", {})], [on_bad, elsewhere],
                      [{"Name": "office", "Options": {"v6nat.allow": "2001:db8::/zz"}}])
    assert result.desired.mappings == (elsewhere,)
    assert result.errors[0].network == "office"


def test_a_mapping_whose_container_has_no_declarations_yet_is_held_back() -> None:
    """The state and the declarations come from one read of Docker's cache; should they ever differ, a
    mapping is never published without its container's rules."""
    result = resolved([], [mapping("new", 80)])
    assert result.desired.mappings == ()


def test_a_stopped_container_reports_nothing() -> None:
    result = resolved([container("off", {"v6nat.allow": "2001:db8::/zz"}, running=False)], [])
    assert result.errors == ()
