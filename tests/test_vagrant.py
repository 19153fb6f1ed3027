"""The Vagrantfile is valid for libvirt and provider-neutral (no box or VM needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

VAGRANTFILE = Path(__file__).resolve().parent.parent / "Vagrantfile"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the Vagrantfile in a scratch project, so validate leaves nothing in the checkout."""
    shutil.copy(VAGRANTFILE, tmp_path / "Vagrantfile")
    (tmp_path / "home").mkdir()
    return tmp_path


def validate(project: Path, *args: str, provider: str = "libvirt") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VAGRANT_HOME": str(project / "home"), "VAGRANT_DEFAULT_PROVIDER": provider,
           "VAGRANT_CHECKPOINT_DISABLE": "1"}
    return subprocess.run(["vagrant", "validate", "--no-tty", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=120)


def test_validates_with_the_libvirt_provider(project: Path) -> None:
    result = validate(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout


def test_validates_ignoring_provider_and_defines_both_machines(project: Path) -> None:
    result = validate(project, "--ignore-provider")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dockerhost:" in result.stdout and "client:" in result.stdout


def test_a_broken_libvirt_option_is_caught(project: Path) -> None:
    # Proves the libvirt block is really checked: validate is not a no-op here.
    vagrantfile = project / "Vagrantfile"
    text = vagrantfile.read_text()
    vagrantfile.write_text(text.replace("lv.cpus = machine[:cpus]", "lv.cpus = machine[:cpus]\n        lv.no_such_option = 1"))
    result = validate(project)
    assert result.returncode != 0
    assert "no_such_option" in result.stdout + result.stderr

