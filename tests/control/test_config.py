"""`v6nat run` options: flags, V6NAT_* environment, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from v6nat_ebpf.cli import build_parser
from v6nat_ebpf.config import ConntrackTimeouts, RunOptions, parse_port_range, run_options
from v6nat_ebpf.errors import V6natError


def options(argv: list[str]) -> RunOptions:
    return run_options(build_parser().parse_args(["run", *argv]))


def test_defaults_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PUBLIC_IFACE", "DOCKER_HOST", "METRICS_LISTEN", "SNAT_PORTS", "PIN_PATH", "LOG_FORMAT", "LOG_LEVEL"):
        monkeypatch.delenv(f"V6NAT_{name}", raising=False)
    opts = options(["--public-iface", "eth1", "--public-iface", "eth2,eth1"])
    assert opts == RunOptions(public_ifaces=("eth1", "eth2"))
    opts = options(["--public-iface", "eth1", "--snat-ports", "62000-62999", "--metrics-listen", "off",
                    "--pin-path", "/sys/fs/bpf/x", "--log-format", "json", "--log-level", "DEBUG", "--detach-on-exit"])
    assert (opts.snat_ports, opts.metrics_listen, opts.pin_path, opts.log_format, opts.log_level, opts.detach_on_exit) == \
        ((62000, 62999), None, "/sys/fs/bpf/x", "json", "debug", True)


def test_environment_gives_defaults_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("V6NAT_PUBLIC_IFACE", "eth3,eth4")
    monkeypatch.setenv("V6NAT_SNAT_PORTS", "60000-60100")
    monkeypatch.setenv("V6NAT_DOCKER_HOST", "unix:///run/d.sock")
    monkeypatch.setenv("V6NAT_DETACH_ON_EXIT", "true")
    monkeypatch.setenv("V6NAT_PIN_PATH", "/sys/fs/bpf/env")
    opts = options([])
    assert (opts.public_ifaces, opts.snat_ports, opts.docker_host, opts.detach_on_exit, opts.pin_path) == \
        (("eth3", "eth4"), (60000, 60100), "unix:///run/d.sock", True, "/sys/fs/bpf/env")
    assert options(["--public-iface", "eth9", "--snat-ports", "61000-61001"]).public_ifaces == ("eth9",)
    assert build_parser().parse_args(["cleanup"]).pin_path == "/sys/fs/bpf/env"


def test_conntrack_timeouts_override_and_short_ones_are_named() -> None:
    opts = options(["--public-iface", "eth1", "--conntrack-timeouts", "udp=30, tcp-established=86400,udp=60"])
    assert opts.conntrack_timeouts == ConntrackTimeouts(udp_s=60, tcp_established_s=86400)
    assert opts.timeouts_below_rfc == ["udp=60 (RFC minimum 120)"]
    assert options(["--public-iface", "eth1"]).conntrack_timeouts == ConntrackTimeouts()


def test_conntrack_max_from_the_flag_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("V6NAT_CONNTRACK_MAX", raising=False)
    assert options(["--public-iface", "eth1"]).conntrack_max is None  # the pinned maps' size, else the default
    assert options(["--public-iface", "eth1", "--conntrack-max", "4096"]).conntrack_max == 4096
    monkeypatch.setenv("V6NAT_CONNTRACK_MAX", "1_048_576")
    assert options(["--public-iface", "eth1"]).conntrack_max == 1 << 20
    assert options(["--public-iface", "eth1", "--conntrack-max=64"]).conntrack_max == 64


@pytest.mark.parametrize("text", ["61000", "65535-61000", "1-2", "61000-70000", "a-b", ""])
def test_malformed_port_ranges(text: str) -> None:
    with pytest.raises(V6natError):
        parse_port_range(text)


@pytest.mark.parametrize("argv, env, message", [
    (["run", "--public-iface", "eth0", "--snat-ports", "9-x"], {}, "malformed port range"),
    (["run"], {}, "--public-iface is required"),
    (["run", "--public-iface", "a/b"], {}, "malformed interface name"),
    (["run", "--public-iface", "eth0"], {"V6NAT_LOG_FORMAT": "xml"}, "log format 'xml'"),
    (["run", "--public-iface", "eth0"], {"V6NAT_DETACH_ON_EXIT": "maybe"}, "V6NAT_DETACH_ON_EXIT"),
    (["run", "--public-iface", "eth0", "--resync-interval", "0"], {}, "positive number"),
    (["run", "--public-iface", "eth0", "--conntrack-timeouts", "tcp=5"], {}, "unknown conntrack timeout 'tcp'"),
    (["run", "--public-iface", "eth0"], {"V6NAT_CONNTRACK_TIMEOUTS": "udp=-1"}, "positive whole number"),
    (["run", "--public-iface", "eth0", "--conntrack-max", "10"], {}, "conntrack max '10': expected a whole number"),
    (["run", "--public-iface", "eth0", "--conntrack-max", "lots"], {}, "from 64 to 16777216"),
    (["run", "--public-iface", "eth0"], {"V6NAT_CONNTRACK_MAX": "99999999999"}, "conntrack max '99999999999'"),
])
def test_bad_input_is_one_line_and_nonzero(argv: list[str], env: dict[str, str], message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "v6nat_ebpf.cli", *argv], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", **env}, timeout=60)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_docker_host_defaults_to_docker_host_env_in_run_and_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """`v6nat run` (DockerSource) and `v6nat check` resolve the Docker URL the same way, as --help says:
    --docker-host / V6NAT_DOCKER_HOST, else $DOCKER_HOST, else unix:///var/run/docker.sock."""
    from v6nat_ebpf import preflight
    from v6nat_ebpf.docker_source import DockerSource

    def noop(kind: str) -> None: ...

    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("V6NAT_DOCKER_HOST", raising=False)
    opts = run_options(build_parser().parse_args(["run", "--public-iface", "eth0"]))
    assert DockerSource(opts.docker_host, noop).url == "unix:///var/run/docker.sock"

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/from-env.sock")
    opts = run_options(build_parser().parse_args(["run", "--public-iface", "eth0"]))
    assert DockerSource(opts.docker_host, noop).url == "unix:///nonexistent/from-env.sock"
    finding = preflight.check_docker(opts.docker_host)[0]
    assert "unix:///nonexistent/from-env.sock" in finding.detail and finding.status == "warn"
    assert "$DOCKER_HOST" in build_parser()._subparsers._group_actions[0].choices["run"].format_help()

    opts = run_options(build_parser().parse_args(["run", "--public-iface", "eth0", "--docker-host", "unix:///x.sock"]))
    assert DockerSource(opts.docker_host, noop).url == "unix:///x.sock"
