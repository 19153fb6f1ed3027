"""fail2ban end to end (issue 16): Debian's fail2ban-server, a jail with contrib/fail2ban/action.d/v6nat.conf
reading a log in the lab; three failures from a client ban it: its open connection is cut and it cannot
connect again, while the other client still can; fail2ban's unban lifts the ban."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from ipaddress import IPv6Address
from pathlib import Path
from typing import Iterator

import pytest
from e2e_support import LIVE_CLIENT, V6NAT, V6nat, eventually, tcp_echo_server

from v6nat_ebpf.lab import Lab

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
B = IPv6Address("2001:db8:5::2")
ECHO_PORT, WHO_PORT = 8090, 8091
JAIL = "v6nat-lab"

FILTER = """[Definition]
failregex = auth failure from <HOST>$
"""

JAIL_CONF = """[DEFAULT]
backend = polling
banaction = v6nat

[{jail}]
enabled = true
filter = {jail}
logpath = {log}
maxretry = 3
findtime = 600
bantime = 600
action = v6nat[v6nat="{v6nat}", pin_path="{pin_path}"]
"""

SERVER_CONF = """[Definition]
loglevel = INFO
logtarget = {log}
socket = {socket}
pidfile = {pidfile}
dbfile = :memory:
"""


@pytest.fixture
def fail2ban(lab: Lab, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """fail2ban-server in the lab's host netns with only our jail; (the log it watches, its socket)."""
    if shutil.which("fail2ban-server") is None:
        pytest.fail("fail2ban is not installed (scripts/setup installs Debian's package)")
    conf = tmp_path / "fail2ban"
    (conf / "filter.d").mkdir(parents=True)
    (conf / "action.d").mkdir()
    shutil.copy(ROOT / "contrib/fail2ban/action.d/v6nat.conf", conf / "action.d/v6nat.conf")
    (conf / "filter.d" / f"{JAIL}.conf").write_text(FILTER)
    watched, socket = tmp_path / "auth.log", tmp_path / "f2b.sock"
    watched.write_text("")
    (conf / "jail.conf").write_text(JAIL_CONF.format(jail=JAIL, log=watched, v6nat=V6NAT, pin_path=lab.pin_path))
    (conf / "fail2ban.conf").write_text(SERVER_CONF.format(log=tmp_path / "f2b.log", socket=socket,
                                                           pidfile=tmp_path / "f2b.pid"))
    server = lab.popen(lab.host_ns, ["fail2ban-server", "-f", "-x", "-c", str(conf)], nsenter=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = ["fail2ban-client", "-c", str(conf), "-s", str(socket)]
    try:
        eventually(lambda: JAIL in run(lab, client + ["status"]).stdout, timeout=30, interval=0.2,
                   what="fail2ban-server up with the jail")
        yield watched, socket
    finally:
        run(lab, client + ["stop"])
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
        log = tmp_path / "f2b.log"
        if log.exists():
            sys.stdout.write(log.read_text()[-3000:])


def run(lab: Lab, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return lab.exec(lab.host_ns, argv, nsenter=True, check=False, timeout=60)


def reaches(lab: Lab, source: IPv6Address) -> bool:
    return lab.probe_peer(lab.host_addr, WHO_PORT, timeout_s=1.5, source=source).peer == source


def bans(lab: Lab) -> list[str]:
    result = lab.exec(lab.host_ns, [V6NAT, "bans", "--json", "--pin-path", lab.pin_path], nsenter=True)
    return [b["prefix"] for b in json.loads(result.stdout)]


def test_a_fail2ban_jail_bans_a_client_and_cuts_its_open_connection(
        lab: Lab, v6nat: V6nat, fail2ban: tuple[Path, Path]) -> None:
    watched, socket = fail2ban
    lab.add_client_address(B)
    ula = lab.create_network("ula", "fd00:19::/64")
    lab.run_container("echo", ula, ["socat", "TCP6-LISTEN:80,fork,reuseaddr", "EXEC:cat"], ports={"80/tcp": ECHO_PORT})
    lab.run_container("who", ula, tcp_echo_server(80), ports={"80/tcp": WHO_PORT})
    eventually(lambda: reaches(lab, B) and reaches(lab, lab.client_addr), what="both clients reach who")
    live = lab.popen(lab.client_ns, [sys.executable, "-c", LIVE_CLIENT, str(lab.host_addr), str(ECHO_PORT), str(B)],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert live.stdout.readline().strip() == "echo"

    with watched.open("a") as log:  # what an SMTP server would log about a password guesser
        for _ in range(3):
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} mail auth failure from {B}\n")
    eventually(lambda: f"{B}/128" in bans(lab), timeout=30, interval=0.5, what="fail2ban banned B through v6nat")
    print(f"\nfail2ban banned {B}: v6nat bans lists {bans(lab)}")

    live.stdin.write("\n")
    live.stdin.flush()
    assert live.stdout.readline().strip().startswith("cut")
    live.wait(10)
    assert not reaches(lab, B)
    assert reaches(lab, lab.client_addr)

    result = run(lab, ["fail2ban-client", "-s", str(socket), "set", JAIL, "unbanip", str(B)])
    assert result.returncode == 0, result.stderr
    eventually(lambda: bans(lab) == [], timeout=15, interval=0.5, what="fail2ban's unban lifted the ban")
    assert reaches(lab, B)
