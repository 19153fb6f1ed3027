"""The lab's image: a root filesystem built in Python from static busybox, imported without a registry.

Imports: stdlib and lab.common.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

from v6nat_ebpf.lab.common import LabError

IMAGE = "v6nat-lab/busybox"
BUSYBOX = Path("/bin/busybox")


def busybox_image_tar() -> bytes:
    """A root filesystem: static busybox with every applet, and links for /usr binaries."""
    if not BUSYBOX.exists():
        raise LabError(f"{BUSYBOX} is missing: install busybox-static (scripts/setup does)")
    head = BUSYBOX.read_bytes()[:4096]
    if b"/lib64/ld-linux" in head or b"/lib/ld-linux" in head:
        raise LabError(f"{BUSYBOX} is dynamically linked: install busybox-static")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add_dir(path: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(path)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)

        def add_link(path: str, target: str) -> None:
            info = tarfile.TarInfo(path)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)

        def add_file(path: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "sbin", "etc", "usr", "root", "var", "var/www", "proc", "sys", "dev"):
            add_dir(d)
        add_dir("tmp", 0o1777)
        # Debian is merged-usr: dynamic binaries from the /usr mount look for
        # their loader and libraries under /lib and /lib64.
        add_link("lib", "usr/lib")
        add_link("lib64", "usr/lib64")
        add_file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
        for applet in applets:
            if applet != "busybox" and "/" not in applet:
                add_link(f"bin/{applet}", "busybox")
        add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        add_file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return buf.getvalue()
