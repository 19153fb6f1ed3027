"""The systemd unit's capability set is enough, and nothing less is: `v6nat run` under `setpriv`.

The set is read from packaging/v6nat.service (CapabilityBoundingSet), so this
test proves the file that ships.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_support import V6nat, address_in, effective_caps, tcp_echo_server

from v6nat_ebpf.errors import V6natError
from v6nat_ebpf.lab import Lab

pytestmark = pytest.mark.lab

UNIT = Path(__file__).resolve().parents[2] / "packaging" / "v6nat.service"
CAP_BITS = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}


def unit_capabilities() -> list[str]:
    for line in UNIT.read_text().splitlines():
        if line.startswith("CapabilityBoundingSet="):
            return line.split("=", 1)[1].split()
    raise AssertionError(f"no CapabilityBoundingSet in {UNIT}")


class CappedV6nat(V6nat):
    """`v6nat run` as root with only `caps` in its bounding set, as systemd starts the unit."""

    def __init__(self, lab: Lab, caps: list[str]) -> None:
        super().__init__(lab)
        self.caps = ",".join("+" + cap.removeprefix("CAP_").lower() for cap in caps)

    def argv(self) -> list[str]:
        return ["setpriv", f"--bounding-set=-all,{self.caps}", f"--inh-caps=-all,{self.caps}", "--", *super().argv()]


def test_the_units_capabilities_are_enough(lab: Lab) -> None:
    caps = unit_capabilities()
    assert set(caps) <= set(CAP_BITS), caps
    net = lab.create_network("ula", "fd00:f::/64")
    web = lab.run_container("web", net, tcp_echo_server(), ports={"80/tcp": 8080})
    lab.popen(lab.client_ns, tcp_echo_server(7000))
    with CappedV6nat(lab, caps).start() as daemon:
        assert effective_caps(daemon.proc.pid) == sum(1 << CAP_BITS[c] for c in caps)
        assert lab.probe_peer(lab.host_addr, 8080).peer == lab.client_addr
        code, out = web.exec_run(["socat", "-T3", "-", f"TCP6:[{lab.client_addr}]:7000"])
        assert code == 0 and address_in(out.decode()) == lab.host_addr, out  # masqueraded
        assert daemon.stop() == 0
        # `systemctl restart`: the next start adopts the pins the first one left, with the same capabilities.
        with CappedV6nat(lab, caps).start() as again:
            assert lab.probe_peer(lab.host_addr, 8080).peer == lab.client_addr
            assert again.stop() == 0


@pytest.mark.parametrize("missing", unit_capabilities())
def test_one_capability_less_fails_with_one_line(lab: Lab, missing: str) -> None:
    caps = [c for c in unit_capabilities() if c != missing]
    with pytest.raises(V6natError) as failed:
        CappedV6nat(lab, caps).start(timeout=60)
    assert "capabilities: missing" in str(failed.value) and "Traceback" not in str(failed.value)
