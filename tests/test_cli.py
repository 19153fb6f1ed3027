"""The `v6nat` command as a user meets it: help, version, check, demo, bad input."""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from v6nat_ebpf import __version__
from v6nat_ebpf.cli import COMMANDS, build_parser
from v6nat_ebpf.datapath.pins import layout_version
from v6nat_ebpf.lab import Lab, LabConfig, leftovers_of

V6NAT = str(Path(sys.executable).parent / "v6nat")
FINDING = re.compile(r"^(ok|warn|fail) +(\S.*?)  +(.*)$")
MACHINE_OK = ["kernel", "BTF", "capabilities", "bpf() syscall", "clsact/cls_bpf", "kernel headers", "bcc"]


def v6nat(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([V6NAT, *args], capture_output=True, text=True, timeout=timeout)


def findings(output: str) -> dict[str, str]:
    """what -> status; every line must be a finding."""
    found = {}
    for line in output.splitlines():
        match = FINDING.match(line)
        assert match, f"not a finding line: {line!r}"
        found[match[2].strip()] = match[1]
    return found


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> None:
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("v6nat"), result.stderr


def test_help_lists_commands_and_examples() -> None:
    result = v6nat("--help")
    assert result.returncode == 0
    for command in ("check", "demo", "lab"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.M), command
    assert "examples:" in result.stdout and "sudo v6nat demo" in result.stdout


def test_each_command_parses_with_its_own_module_alone() -> None:
    """`v6nat COMMAND` imports only the module COMMANDS names for it: that module must register it, and the
    full parser (`v6nat --help`) holds exactly COMMANDS, in their order."""
    def commands(parser: argparse.ArgumentParser) -> list[str]:
        return list(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]

    assert commands(build_parser()) == list(COMMANDS)
    for command in COMMANDS:
        assert command in commands(build_parser(command))
    result = v6nat("flows", "--port", "x")  # usage errors of a command parsed alone: still one line, exit 2
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "v6nat flows: error:" in result.stderr


def test_version_names_the_datapath_layout() -> None:
    result = v6nat("--version")
    layout = layout_version()
    assert (result.returncode, result.stdout.strip()) == (0, f"v6nat {__version__} (datapath layout v{layout})")


def test_check_reports_this_machine_ready() -> None:
    result = v6nat("check")
    found = findings(result.stdout)
    assert {what: found.get(what) for what in MACHINE_OK} == {what: "ok" for what in MACHINE_OK}, result.stdout
    # No dockerd serves the default socket here (labs run their own): a warning, not a failure.
    assert found["Docker"] == "warn"
    assert result.returncode == 0, result.stdout


def test_check_fails_for_an_unreachable_docker_host_given_explicitly() -> None:
    result = v6nat("check", "--docker-host", "unix:///nonexistent/docker.sock", "--json")
    by_what = {f["what"]: f for f in json.loads(result.stdout)}
    assert by_what["Docker"]["status"] == "fail"
    assert "/nonexistent/docker.sock" in by_what["Docker"]["detail"]
    assert result.returncode == 1


@pytest.mark.lab
@pytest.mark.parametrize("config, proxy, ip6tables", [
    (LabConfig(userland_proxy=True), "fail", "ok"),
    (LabConfig(userland_proxy=False, ip6tables=True), "ok", "fail"),
])
def test_check_flags_docker_settings_that_conflict(config: LabConfig, proxy: str, ip6tables: str) -> None:
    with Lab(config) as lab:
        result = v6nat("check", "--docker-host", lab.docker_url)
    found = findings(result.stdout)
    assert found["Docker"] == "ok"
    assert (found["Docker userland-proxy"], found["Docker ip6tables"]) == (proxy, ip6tables)
    assert result.returncode == 1  # `v6nat run` would refuse: check says so


@pytest.mark.lab
def test_run_refuses_a_docker_that_writes_ipv6_nat_rules_unless_allowed() -> None:
    """A real dockerd started with --experimental --ip6tables: `v6nat run` exits 1 with one line naming the
    setting to change; with --allow-docker-ip6tables it starts."""
    from v6nat_ebpf.lab.daemon import LabDaemon

    with Lab(LabConfig(userland_proxy=False, ip6tables=True, iptables=True)) as lab:
        refused = LabDaemon(lab).start(wait_ready=False)
        assert refused.proc is not None and refused.proc.wait(60) == 1
        lines = [line for line in refused.log().splitlines() if "ip6tables" in line]
        assert lines and '"ip6tables": false' in lines[-1] and "--allow-docker-ip6tables" in lines[-1], refused.log()
        assert "Traceback" not in refused.log()
        with LabDaemon(lab, extra=("--allow-docker-ip6tables",)).start() as allowed:
            assert allowed.running()
            assert "ip6tables is on and allowed" in allowed.log()


@pytest.mark.parametrize("args", [
    ["frobnicate"],
    ["check", "--no-such-flag"],
    ["check", "--docker-host"],
    [],
    ["lab"],
])
def test_bad_input_is_one_line_and_exit_2(args: list[str]) -> None:
    assert_one_line_error(v6nat(*args), 2)


def test_error_from_the_library_is_one_line_and_exit_1(v6nat_as_nobody: list[str]) -> None:
    # As an unprivileged user, `lab cleanup` refuses with a V6natError.
    result = subprocess.run([*v6nat_as_nobody, "lab", "cleanup"], capture_output=True, text=True, timeout=60)
    assert_one_line_error(result, 1)
    assert "root" in result.stderr


@pytest.mark.lab
def test_demo_shows_the_internal_address_and_leaves_nothing() -> None:
    result = v6nat("demo")
    assert result.returncode == 0, result.stderr
    assert "the container saw fd00:ca7e:d09e::1, not the client's 2001:db8:1::2" in result.stdout
    assert "no answer within" in result.stdout
    for name in re.findall(r"lab (v6l-[0-9a-f]{6})", result.stdout):
        assert leftovers_of(name) == []


def sigint_as_in_a_terminal() -> None:
    """In the demo's child before exec: SIGINT at its default, as for a command typed at a terminal.
    A run started in the background (`make test &`, nohup, CI runners) inherits SIGINT ignored,
    and Python keeps an ignored SIGINT ignored: the demo would never see the test's Ctrl-C and
    would finish with 0."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.lab
def test_demo_interrupted_by_ctrl_c_exits_130_and_tears_down() -> None:
    proc = subprocess.Popen([V6NAT, "demo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_in_a_terminal)
    assert proc.stdout is not None
    name = None
    for line in proc.stdout:
        if match := re.search(r"lab (v6l-[0-9a-f]{6})", line):
            name = match[1]
            break
    assert name, "the demo never brought a lab up"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in stderr
    assert leftovers_of(name) == []
