"""The bpf(2) calls the datapath needs, through the system's libbpf (ctypes).

Maps are opened from their pins, so every process (the daemon, `v6nat status`,
the metrics collector) reads and writes them the same way, with or without the
compiled programs. Also BPF_PROG_TEST_RUN for the packet tests and the bench.
Imports nothing from the project except errors.
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Iterator

from v6nat_ebpf.errors import V6natError

BPF_ANY = 0
BPF_NOEXIST = 1

# Errors meaning "this kernel or map type has no batch operation" (524: ENOTSUPP).
_BATCH_UNSUPPORTED = {errno.EINVAL, errno.EOPNOTSUPP, 524}

# bpf_map_type values (linux/bpf.h) that v6nat uses: the one copy (layout.py and preflight use these).
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_HASH = 9
BPF_MAP_TYPE_LPM_TRIE = 11
BPF_MAP_TYPE_RINGBUF = 27
MAP_TYPE_NAMES = {
    BPF_MAP_TYPE_HASH: "hash",
    BPF_MAP_TYPE_ARRAY: "array",
    BPF_MAP_TYPE_PERCPU_HASH: "percpu_hash",
    BPF_MAP_TYPE_PERCPU_ARRAY: "percpu_array",
    BPF_MAP_TYPE_LRU_HASH: "lru_hash",
    BPF_MAP_TYPE_LPM_TRIE: "lpm_trie",
    BPF_MAP_TYPE_RINGBUF: "ringbuf",
}


class _MapBatchOpts(ct.Structure):
    _fields_ = [("sz", ct.c_size_t), ("elem_flags", ct.c_uint64), ("flags", ct.c_uint64)]


class _TestRunOpts(ct.Structure):
    _fields_ = [
        ("sz", ct.c_size_t),
        ("data_in", ct.c_void_p),
        ("data_out", ct.c_void_p),
        ("data_size_in", ct.c_uint32),
        ("data_size_out", ct.c_uint32),
        ("ctx_in", ct.c_void_p),
        ("ctx_out", ct.c_void_p),
        ("ctx_size_in", ct.c_uint32),
        ("ctx_size_out", ct.c_uint32),
        ("retval", ct.c_uint32),
        ("repeat", ct.c_int),
        ("duration", ct.c_uint32),
        ("flags", ct.c_uint32),
        ("cpu", ct.c_uint32),
        ("batch_size", ct.c_uint32),
    ]


class _MapInfo(ct.Structure):
    # The head of struct bpf_map_info; the buffer passed is larger and zeroed.
    _fields_ = [
        ("type", ct.c_uint32),
        ("id", ct.c_uint32),
        ("key_size", ct.c_uint32),
        ("value_size", ct.c_uint32),
        ("max_entries", ct.c_uint32),
        ("map_flags", ct.c_uint32),
        ("name", ct.c_char * 16),
    ]


@dataclass(frozen=True)
class MapInfo:
    """What the kernel says about a map: what adoption checks."""

    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int

    @property
    def type_name(self) -> str:
        return MAP_TYPE_NAMES.get(self.type, f"type {self.type}")


@cache
def _libbpf() -> ct.CDLL:
    try:
        lib = ct.CDLL("libbpf.so.1", use_errno=True)
    except OSError as exc:
        raise V6natError(f"cannot load libbpf.so.1 ({exc}); install libbpf1") from exc
    vp, u32p = ct.c_void_p, ct.POINTER(ct.c_uint32)
    signatures = {
        "bpf_map_create": ([ct.c_int, ct.c_char_p, ct.c_uint32, ct.c_uint32, ct.c_uint32, vp], ct.c_int),
        "bpf_obj_get": ([ct.c_char_p], ct.c_int),
        "bpf_obj_pin": ([ct.c_int, ct.c_char_p], ct.c_int),
        "bpf_obj_get_info_by_fd": ([ct.c_int, vp, u32p], ct.c_int),
        "bpf_map_lookup_elem": ([ct.c_int, vp, vp], ct.c_int),
        "bpf_map_update_elem": ([ct.c_int, vp, vp, ct.c_uint64], ct.c_int),
        "bpf_map_delete_elem": ([ct.c_int, vp], ct.c_int),
        "bpf_map_get_next_key": ([ct.c_int, vp, vp], ct.c_int),
        "bpf_map_update_batch": ([ct.c_int, vp, vp, u32p, vp], ct.c_int),
        "bpf_map_lookup_batch": ([ct.c_int, vp, vp, vp, vp, u32p, vp], ct.c_int),
        "bpf_map_delete_batch": ([ct.c_int, vp, u32p, vp], ct.c_int),
        "bpf_prog_test_run_opts": ([ct.c_int, vp], ct.c_int),
        "libbpf_num_possible_cpus": ([], ct.c_int),
        # bpf_links (host-local access: cgroup attachments that outlive the process when pinned)
        "bpf_obj_pin": ([ct.c_int, ct.c_char_p], ct.c_int),
        "bpf_link_create": ([ct.c_int, ct.c_int, ct.c_int, vp], ct.c_int),
        "bpf_link_update": ([ct.c_int, ct.c_int, vp], ct.c_int),
        "bpf_link_detach": ([ct.c_int], ct.c_int),
        "bpf_prog_load": ([ct.c_int, ct.c_char_p, ct.c_char_p, vp, ct.c_size_t, vp], ct.c_int),
    }
    for name, (argtypes, restype) in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = restype
    return lib


def mounts_of_type(fstype: str) -> list[Path]:
    """Where filesystems of `fstype` are mounted, in /proc/self/mounts order ("bpf" for the pins,
    "cgroup2" for the socket hooks' cgroups)."""
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == fstype:
            mounts.append(Path(fields[1]))
    return mounts


def _err(ret: int) -> int:
    """libbpf 1.x returns -errno; older paths set errno and return -1."""
    return -ret if ret < -1 else ct.get_errno()


def possible_cpus() -> int:
    return _libbpf().libbpf_num_possible_cpus()


def create_map(map_type: int, key_size: int, value_size: int, max_entries: int) -> int:
    """An fd for a new unpinned map (the caller closes it)."""
    fd = _libbpf().bpf_map_create(map_type, None, key_size, value_size, max_entries, None)
    if fd < 0:
        raise V6natError(f"creating a {MAP_TYPE_NAMES.get(map_type, map_type)} map failed: {os.strerror(_err(fd))}")
    return fd


def obj_get(path: str) -> int:
    """An fd for the pinned object at `path` (the caller closes it)."""
    fd = _libbpf().bpf_obj_get(path.encode())
    if fd < 0:
        raise V6natError(f"cannot open pinned BPF object {path}: {os.strerror(_err(fd))}")
    return fd


def obj_pin(fd: int, path: str) -> None:
    """Pin the object behind `fd` at `path` on a bpffs."""
    ret = _libbpf().bpf_obj_pin(fd, path.encode())
    if ret:
        raise V6natError(f"cannot pin a BPF object at {path}: {os.strerror(_err(ret))}")


def _obj_info(fd: int) -> ct.Array[ct.c_uint8]:
    """BPF_OBJ_GET_INFO_BY_FD's answer for a map, program or link, to read with its info structure."""
    buf = (ct.c_uint8 * 256)()
    size = ct.c_uint32(ct.sizeof(buf))
    ret = _libbpf().bpf_obj_get_info_by_fd(fd, buf, ct.byref(size))
    if ret:
        raise V6natError(f"BPF_OBJ_GET_INFO_BY_FD failed: {os.strerror(_err(ret))}")
    return buf


def map_info(fd: int) -> MapInfo:
    info = _MapInfo.from_buffer(_obj_info(fd))
    return MapInfo(info.type, info.key_size, info.value_size, info.max_entries, info.map_flags)


class _LinkInfo(ct.Structure):
    # The head of struct bpf_link_info with its cgroup member (the union starts 8-aligned).
    _fields_ = [
        ("type", ct.c_uint32),
        ("id", ct.c_uint32),
        ("prog_id", ct.c_uint32),
        ("_pad", ct.c_uint32),
        ("cgroup_id", ct.c_uint64),
        ("attach_type", ct.c_uint32),
    ]


@dataclass(frozen=True)
class CgroupLinkInfo:
    """What the kernel says about a cgroup bpf_link."""

    prog_id: int
    cgroup_id: int  # 0: the cgroup is gone or the link was detached
    attach_type: int


class _ProgLoadOpts(ct.Structure):
    # The head of struct bpf_prog_load_opts: libbpf takes a shorter struct (sz says how long) as zeros beyond.
    _fields_ = [("sz", ct.c_size_t), ("attempts", ct.c_int), ("expected_attach_type", ct.c_uint32)]


def prog_load(prog_type: int, expected_attach_type: int, insns: bytes) -> int:
    """An fd for a program of raw instructions (8 bytes each), for probing what the kernel supports."""
    opts = _ProgLoadOpts(ct.sizeof(_ProgLoadOpts), 0, expected_attach_type)
    buf = ct.create_string_buffer(insns, len(insns))
    fd = _libbpf().bpf_prog_load(prog_type, b"v6nat_probe", b"GPL", buf, len(insns) // 8, ct.byref(opts))
    if fd < 0:
        raise V6natError(f"BPF_PROG_LOAD (type {prog_type}) failed: {os.strerror(_err(fd))}")
    return fd


def link_create(prog_fd: int, target_fd: int, attach_type: int) -> int:
    """An fd for a new bpf_link of the program to the target (a cgroup's directory fd)."""
    fd = _libbpf().bpf_link_create(prog_fd, target_fd, attach_type, None)
    if fd < 0:
        raise V6natError(f"BPF_LINK_CREATE (attach type {attach_type}) failed: {os.strerror(_err(fd))}")
    return fd


def link_update(link_fd: int, prog_fd: int) -> None:
    """Replace the link's program atomically."""
    ret = _libbpf().bpf_link_update(link_fd, prog_fd, None)
    if ret:
        raise V6natError(f"BPF_LINK_UPDATE failed: {os.strerror(_err(ret))}")


def link_detach(link_fd: int) -> None:
    """Detach the link now, whoever else holds it (a detached link stays, inert, until closed)."""
    ret = _libbpf().bpf_link_detach(link_fd)
    if ret:
        raise V6natError(f"BPF_LINK_DETACH failed: {os.strerror(_err(ret))}")


def cgroup_link_info(link_fd: int) -> CgroupLinkInfo:
    info = _LinkInfo.from_buffer(_obj_info(link_fd))
    return CgroupLinkInfo(info.prog_id, info.cgroup_id, info.attach_type)


class BpfMap:
    """Raw access to one map by fd: bytes-sized ctypes buffers in and out."""

    def __init__(self, fd: int, key_size: int, value_size: int, percpu: bool) -> None:
        self.fd = fd
        self.key_size = key_size
        self.value_size = value_size
        # Per-CPU values come as one 8-byte aligned slot per possible CPU.
        self.slot = (value_size + 7) & ~7 if percpu else value_size
        self.ncpus = possible_cpus() if percpu else 1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def lookup(self, key: ct.Structure | ct.Array) -> bytes | None:
        buf = ct.create_string_buffer(self.slot * self.ncpus)
        ret = _libbpf().bpf_map_lookup_elem(self.fd, ct.byref(key), buf)
        if ret == 0:
            return buf.raw
        if _err(ret) == errno.ENOENT:
            return None
        raise OSError(_err(ret), f"map lookup: {os.strerror(_err(ret))}")

    def update(self, key: ct.Structure | ct.Array, value: ct.Structure | ct.Array | bytes,
               flags: int = BPF_ANY) -> None:
        ret = _libbpf().bpf_map_update_elem(self.fd, ct.byref(key), _ref(value), flags)
        if ret:
            raise OSError(_err(ret), f"map update: {os.strerror(_err(ret))}")

    def delete(self, key: ct.Structure | ct.Array) -> bool:
        ret = _libbpf().bpf_map_delete_elem(self.fd, ct.byref(key))
        if ret == 0:
            return True
        if _err(ret) == errno.ENOENT:
            return False
        raise OSError(_err(ret), f"map delete: {os.strerror(_err(ret))}")

    def keys(self) -> list[bytes]:
        """All keys, by BPF_MAP_GET_NEXT_KEY (restarts if the current key vanished)."""
        out: list[bytes] = []
        cur = ct.create_string_buffer(self.key_size)
        nxt = ct.create_string_buffer(self.key_size)
        ret = _libbpf().bpf_map_get_next_key(self.fd, None, nxt)
        while ret == 0:
            out.append(nxt.raw)
            ct.memmove(cur, nxt, self.key_size)
            ret = _libbpf().bpf_map_get_next_key(self.fd, cur, nxt)
        if _err(ret) != errno.ENOENT:
            raise OSError(_err(ret), f"map iteration: {os.strerror(_err(ret))}")
        return out

    def batches(self, chunk: int = 4096) -> Iterator[tuple[bytes, bytes, int]]:
        """Every entry as (keys, values, count) per BPF_MAP_LOOKUP_BATCH call:
        `count` keys and values packed end to end (values of per-CPU maps as
        `ncpus` slots each), for callers that decode only a few bytes of each.
        Map types without batch lookup (e.g. LPM tries) come key by key, as one chunk."""
        lib = _libbpf()
        value_size = self.slot * self.ncpus
        keys = ct.create_string_buffer(self.key_size * chunk)
        values = ct.create_string_buffer(value_size * chunk)
        # The position token: a bucket index for hash maps, a key for arrays.
        token_in = ct.create_string_buffer(max(self.key_size, 8))
        token_out = ct.create_string_buffer(max(self.key_size, 8))
        opts = _MapBatchOpts(ct.sizeof(_MapBatchOpts), 0, 0)
        first = True
        while True:
            n = ct.c_uint32(chunk)
            ret = lib.bpf_map_lookup_batch(self.fd, None if first else token_in, token_out, keys, values,
                                           ct.byref(n), ct.byref(opts))
            err = _err(ret) if ret else 0
            if err not in (0, errno.ENOENT):
                if first and err in _BATCH_UNSUPPORTED:
                    pairs = self._items_key_by_key()
                    yield b"".join(k for k, _ in pairs), b"".join(v for _, v in pairs), len(pairs)
                    return
                raise OSError(err, f"map batch lookup: {os.strerror(err)}")
            if n.value:
                # string_at: one copy of what was filled (.raw[:k] copies the whole buffer, then k bytes)
                yield ct.string_at(keys, n.value * self.key_size), ct.string_at(values, n.value * value_size), n.value
            if err == errno.ENOENT:
                return
            ct.memmove(token_in, token_out, len(token_out))
            first = False

    def items(self, chunk: int = 4096) -> list[tuple[bytes, bytes]]:
        """Every (key, value), read in batches (see `batches`)."""
        ks, vs = self.key_size, self.slot * self.ncpus
        out: list[tuple[bytes, bytes]] = []
        for keys, values, n in self.batches(chunk):
            out += [(keys[i * ks:(i + 1) * ks], values[i * vs:(i + 1) * vs]) for i in range(n)]
        return out

    def count(self) -> int:
        """Number of entries, read in batches without a Python object per entry."""
        return sum(n for _, _, n in self.batches())

    def _items_key_by_key(self) -> list[tuple[bytes, bytes]]:
        out = []
        for kb in self.keys():
            found = self.lookup(ct.create_string_buffer(kb, len(kb)))
            if found is not None:
                out.append((kb, found))
        return out

    def update_batch(self, keys: bytes, values: bytes, count: int) -> bool:
        """BPF_MAP_UPDATE_BATCH; False where the kernel or map type lacks it."""
        opts = _MapBatchOpts(ct.sizeof(_MapBatchOpts), BPF_ANY, 0)
        n = ct.c_uint32(count)
        ret = _libbpf().bpf_map_update_batch(self.fd, keys, values, ct.byref(n), ct.byref(opts))
        if ret == 0:
            return True
        if _err(ret) in _BATCH_UNSUPPORTED and n.value == 0:
            return False
        raise OSError(_err(ret), f"map batch update: {os.strerror(_err(ret))}")

    def delete_batch(self, keys: bytes, count: int) -> bool:
        """BPF_MAP_DELETE_BATCH; False where unsupported. Missing keys are an error
        for the kernel, so callers pass keys known to exist or fall back."""
        opts = _MapBatchOpts(ct.sizeof(_MapBatchOpts), 0, 0)
        n = ct.c_uint32(count)
        ret = _libbpf().bpf_map_delete_batch(self.fd, keys, ct.byref(n), ct.byref(opts))
        if ret == 0:
            return True
        if n.value == 0 and _err(ret) in _BATCH_UNSUPPORTED | {errno.ENOENT}:
            return False
        raise OSError(_err(ret), f"map batch delete: {os.strerror(_err(ret))}")


def _ref(value: ct.Structure | ct.Array | bytes) -> ct.c_void_p | ct.Array:
    if isinstance(value, bytes):
        return ct.create_string_buffer(value, len(value))
    return ct.byref(value)  # type: ignore[return-value]


@dataclass(frozen=True)
class TestRunResult:
    retval: int
    data: bytes
    duration_ns: int


def prog_test_run(prog_fd: int, data: bytes, ctx: bytes | None = None, repeat: int = 1) -> TestRunResult:
    """BPF_PROG_TEST_RUN: run the program on `data` `repeat` times (each run on
    the packet the previous one left) and return the last output."""
    data_in = ct.create_string_buffer(data, len(data))
    out_size = len(data) + 256  # room for programs that grow the packet
    data_out = ct.create_string_buffer(out_size)
    opts = _TestRunOpts()
    opts.sz = ct.sizeof(_TestRunOpts)
    opts.data_in = ct.cast(data_in, ct.c_void_p)
    opts.data_size_in = len(data)
    opts.data_out = ct.cast(data_out, ct.c_void_p)
    opts.data_size_out = out_size
    opts.repeat = repeat
    if ctx is not None:
        ctx_in = ct.create_string_buffer(ctx, len(ctx))
        opts.ctx_in = ct.cast(ctx_in, ct.c_void_p)
        opts.ctx_size_in = len(ctx)
    ret = _libbpf().bpf_prog_test_run_opts(prog_fd, ct.byref(opts))
    if ret:
        raise OSError(_err(ret), f"BPF_PROG_TEST_RUN: {os.strerror(_err(ret))}")
    return TestRunResult(ct.c_int32(opts.retval).value, data_out.raw[: opts.data_size_out], opts.duration)
