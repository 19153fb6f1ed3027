"""The import rules of docs/architecture.md, checked on the source and on a real import.

- Nothing outside v6nat_ebpf/lab/ imports the lab, except cli.py, which only registers the lab's commands
  (`v6nat demo`, `v6nat lab cleanup`). So the daemon's path (commands, daemon, reconciler, the sources,
  datapath/, observe/, preflight) never loads the lab, docker-the-lab or scapy.
- model.py imports nothing but the standard library.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import v6nat_ebpf

PACKAGE = Path(v6nat_ebpf.__file__).parent
LAB = "v6nat_ebpf.lab"
# cli.py is the registry of every command, the lab's two among them.
MAY_IMPORT_LAB = {PACKAGE / "cli.py"}
DAEMON_PATH = (
    "v6nat_ebpf.commands.run",
    "v6nat_ebpf.commands.status",
    "v6nat_ebpf.commands.flows",
    "v6nat_ebpf.commands.bans",
    "v6nat_ebpf.commands.cleanup",
    "v6nat_ebpf.daemon",
    "v6nat_ebpf.reconciler",
    "v6nat_ebpf.docker_source",
    "v6nat_ebpf.host_source",
    "v6nat_ebpf.host_effects",
    "v6nat_ebpf.preflight",
    "v6nat_ebpf.datapath",
    "v6nat_ebpf.datapath.loader",
    "v6nat_ebpf.observe.server",
    "v6nat_ebpf.observe.exposition",
)


def imported_modules(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` anywhere in the file names (function bodies too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def outside_lab() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if PACKAGE / "lab" not in p.parents]


def test_nothing_outside_the_lab_imports_it() -> None:
    offenders = {
        str(p.relative_to(PACKAGE)): sorted(n for n in imported_modules(p) if n == LAB or n.startswith(LAB + "."))
        for p in outside_lab()
        if p not in MAY_IMPORT_LAB
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    assert any(imported_modules(p) for p in outside_lab())  # the walk saw the package


def test_nothing_outside_the_lab_imports_scapy() -> None:
    offenders = {str(p.relative_to(PACKAGE)) for p in outside_lab() if any(n.split(".")[0] == "scapy" for n in imported_modules(p))}
    assert offenders == set()


def test_daemon_path_loads_neither_lab_nor_scapy() -> None:
    code = (
        "import importlib, sys\n"
        f"for m in {DAEMON_PATH!r}: importlib.import_module(m)\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith(('v6nat_ebpf.lab', 'scapy')))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_model_imports_only_the_standard_library() -> None:
    names = {n.split(".")[0] for n in imported_modules(PACKAGE / "model.py")} - {"__future__"}
    assert names, "model.py imports nothing at all? the check would be vacuous"
    assert names <= set(sys.stdlib_module_names), names - set(sys.stdlib_module_names)


def test_the_daemon_loads_neither_bcc_nor_the_docker_sdk() -> None:
    """Footprint (issue 15): bcc maps LLVM (about 150 MB) and the Docker SDK costs about 15 MB; the daemon
    (`v6nat run`, every command registered as `v6nat` does) needs neither: compiling happens in a child
    process, Docker is spoken to by docker_api."""
    code = (
        "import importlib, sys\n"
        "from v6nat_ebpf.cli import build_parser\n"
        "build_parser()\n"
        f"for m in {DAEMON_PATH!r} + ('v6nat_ebpf.docker_api', 'v6nat_ebpf.observe.snapshot'): importlib.import_module(m)\n"
        "from v6nat_ebpf.observe.snapshot import build_info\n"
        "build_info()\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('bcc', 'docker', 'requests'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
