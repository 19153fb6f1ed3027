"""`make install` / `make uninstall` (scripts/install), into a directory of the test's own.

The same script with its paths moved (the V6NAT_* path variables) under a temporary root: a venv
that sees the system's bcc, the command, the unit, the docs, and /etc/default/v6nat written once
and never overwritten. Enabling the unit needs systemd, which this machine does not run: the VM
lab (`make vagrant-test`) provisions with `scripts/install` and ENABLE=1, and checks the service.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from v6nat_ebpf import __version__
from v6nat_ebpf.datapath.pins import layout_version

REPO = Path(__file__).resolve().parents[2]


def install(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    paths = {"V6NAT_VENV": root / "opt/v6nat", "V6NAT_BINDIR": root / "bin", "V6NAT_UNITDIR": root / "systemd",
             "V6NAT_DEFAULTS": root / "default/v6nat", "V6NAT_DOCDIR": root / "doc"}
    result = subprocess.run([str(REPO / "scripts/install"), *args], capture_output=True, text=True, timeout=900,
                            env={**os.environ, **{k: str(v) for k, v in paths.items()}, **env})
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_install_keeps_the_settings_and_uninstall_removes_the_rest(tmp_path: Path) -> None:
    install(tmp_path, PUBLIC_IFACE="eth7")
    command = tmp_path / "bin/v6nat"
    version = subprocess.run([str(command), "--version"], capture_output=True, text=True, check=True).stdout
    assert version.strip() == f"v6nat {__version__} (datapath layout v{layout_version()})"
    # The venv's own copy (the checkout may go), seeing Debian's bcc.
    python = tmp_path / "opt/v6nat/bin/python"
    where = subprocess.run([str(python), "-c", "import bcc.version, v6nat_ebpf; print(v6nat_ebpf.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert where.startswith(str(tmp_path / "opt/v6nat/lib/"))
    assert (tmp_path / "systemd/v6nat.service").read_text() == (REPO / "packaging/v6nat.service").read_text()
    assert (tmp_path / "doc/install.md").exists() and not (REPO / "build").exists()
    defaults = tmp_path / "default/v6nat"
    assert "\nV6NAT_PUBLIC_IFACE=eth7\n" in defaults.read_text()
    assert "#V6NAT_PIN_PATH=/sys/fs/bpf/v6nat" in defaults.read_text()  # the rest commented, with defaults

    defaults.write_text("V6NAT_PUBLIC_IFACE=eth8\n")  # the operator's own
    again = install(tmp_path, PUBLIC_IFACE="eth9")
    assert f"keeping {defaults}" in again.stdout and defaults.read_text() == "V6NAT_PUBLIC_IFACE=eth8\n"

    gone = install(tmp_path, "--uninstall", V6NAT_PIN_PATH=f"/sys/fs/bpf/v6nat-install-test-{os.getpid()}")
    assert "kept" in gone.stdout
    assert sorted(p.name for p in tmp_path.rglob("*") if not p.is_dir()) == ["v6nat"]  # only the settings
    assert defaults.read_text() == "V6NAT_PUBLIC_IFACE=eth8\n"
