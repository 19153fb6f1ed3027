"""The package as installed from a wheel: it carries the BPF sources and the loader finds them there.

The repository keeps bpf/ at its top level; pyproject.toml maps it into the wheel as v6nat_ebpf/bpf/.
The wheel is built from a copy of the sources (no build/ or egg-info in the checkout) and installed
into a directory of its own, which then shadows the checkout on the path of a fresh interpreter.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_an_installed_wheel_carries_and_finds_the_bpf_sources(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source)
    for name in ("v6nat_ebpf", "bpf"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("v6nat_ebpf-*.whl"))
    expected = {f"v6nat_ebpf/bpf/{p.relative_to(REPO / 'bpf')}" for p in (REPO / "bpf").rglob("*.[ch]")}
    assert expected <= set(zipfile.ZipFile(wheel).namelist())
    modules = {f"v6nat_ebpf/{p.relative_to(REPO / 'v6nat_ebpf')}" for p in (REPO / "v6nat_ebpf").rglob("*.py")}
    assert modules - set(zipfile.ZipFile(wheel).namelist()) == set()  # every subpackage listed in pyproject.toml

    target = tmp_path / "installed"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    probe = ("from v6nat_ebpf.datapath import layout, loader; "
             "print(layout.BPF_DIR); print(len(layout.header().drop_reasons)); "
             "print('#include \"' in loader.program_source())")
    found = subprocess.run([sys.executable, "-c", probe], env={"PYTHONPATH": str(target)}, cwd=tmp_path,
                           capture_output=True, text=True, check=True, timeout=60).stdout.split()
    assert found[0] == str(target / "v6nat_ebpf" / "bpf")
    assert int(found[1]) > 0 and found[2] == "False"  # the header parsed, every quoted include inlined
