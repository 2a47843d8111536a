"""A local store that writes large chunks around the page cache (``O_DIRECT``).

A capture writes each batch's activations once and does not read them back while it runs.
Through the page cache every 4 KiB page of them is allocated, copied, marked dirty and
later written back by the kernel: on the 2-CPU VM of benchmarks/RESULTS.md that cost
~1 s of kernel CPU per GB — more than the model's own compute for W1's 855 MB batches —
whereas ``O_DIRECT`` hands the pages to the disk without them (~0.13 s of CPU per GB,
measured with ``dd``).  So :class:`DirectLocalStore` writes values of at least
:data:`DIRECT_MIN_BYTES` with ``O_DIRECT`` (copied through an aligned buffer, the unaligned
tail written normally) and everything else — metadata, statistics, the commit record —
exactly as zarr's :class:`~zarr.storage.LocalStore` does.  Files are still written to a
temporary name and renamed, so a chunk is whole or absent.

A file system that refuses ``O_DIRECT`` (tmpfs, some network file systems) falls back to
the normal path.  ``TENSORTAP_DIRECT_IO=0`` turns it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import mmap
import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
from zarr.core.buffer import Buffer
from zarr.storage import LocalStore

from tensortap.core.store.leftovers import PARTIAL_SUFFIX

__all__ = [
    "DIRECT_MIN_BYTES",
    "DirectLocalStore",
    "direct_io_enabled",
    "temporary_name",
    "write_file",
]

#: Values smaller than this go through the page cache (their copy costs more than it saves).
DIRECT_MIN_BYTES = 1 << 20
#: Alignment ``O_DIRECT`` asks of buffers, lengths and offsets (covers 512 B and 4 KiB disks).
_ALIGN = 4096
#: Size of each thread's aligned bounce buffer, and of each direct write.
_BOUNCE_BYTES = 8 << 20

_local = threading.local()


def direct_io_enabled() -> bool:
    """Whether this platform has ``O_DIRECT`` and ``TENSORTAP_DIRECT_IO`` is not ``0``."""
    return hasattr(os, "O_DIRECT") and os.environ.get("TENSORTAP_DIRECT_IO", "1") != "0"


def _bounce() -> mmap.mmap:
    """This thread's page-aligned buffer (an anonymous mapping is always aligned)."""
    buffer: mmap.mmap | None = getattr(_local, "buffer", None)
    if buffer is None:
        buffer = _local.buffer = mmap.mmap(-1, _BOUNCE_BYTES)
    return buffer


#: Temporary names: a random prefix, the process id (a forked child shares the prefix) and
#: a counter — one ``uuid4`` per file cost a ``getrandom`` call, and a training step writes
#: a dozen small files.
_TMP_PREFIX = uuid.uuid4().hex[:12]
_tmp_numbers = itertools.count()


def temporary_name(path: Path) -> str:
    """A fresh temporary name next to ``path``, as ``path.with_suffix(".<token>.partial")``."""
    token = f"{_TMP_PREFIX}{os.getpid():x}-{next(_tmp_numbers):x}"
    return os.fspath(path.with_suffix(f".{token}{PARTIAL_SUFFIX}"))


def _atomic_write(path: Path, fill: Callable[[int], None], *, direct: bool) -> bool:
    """Write a temporary file next to ``path`` with ``fill(fd)``, then rename it over
    ``path``: the file is whole or absent.  Returns ``False``, having written nothing,
    when ``direct`` was asked for and the file system refuses ``O_DIRECT``."""
    tmp = temporary_name(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | (os.O_DIRECT if direct else 0)
    try:
        fd = os.open(tmp, flags, 0o644)
    except OSError:
        if not direct:
            raise
        with contextlib.suppress(FileNotFoundError):  # EINVAL: no O_DIRECT here
            os.unlink(tmp)
        return False
    try:
        fill(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    return True


def _fill_direct(fd: int, data: memoryview, trailer: bytes = b"") -> None:
    """Write ``data`` then ``trailer`` to a file opened with ``O_DIRECT`` through this
    thread's aligned buffer; an unaligned tail (and the trailer) is written normally."""
    aligned = len(data) - len(data) % _ALIGN
    view = memoryview(_bounce())
    # NumPy copies without the GIL (a memoryview copy holds it: ~0.1 s a W1 batch during
    # which no other Python thread, the model's included, could run).
    source, target = np.frombuffer(data, np.uint8), np.frombuffer(view, np.uint8)
    try:
        offset = 0
        while offset < aligned:
            n = min(_BOUNCE_BYTES, aligned - offset)
            np.copyto(target[:n], source[offset : offset + n])
            written = 0
            while written < n:
                written += os.write(fd, view[written:n])
            offset += n
    finally:
        del target
        view.release()
    if offset < len(data) or trailer:
        import fcntl

        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
        _write_all(fd, data[offset:])
        _write_all(fd, memoryview(trailer))


def _write_all(fd: int, data: memoryview) -> None:
    while len(data):
        data = data[os.write(fd, data) :]


def _write_direct(path: Path, data: memoryview, trailer: bytes = b"") -> bool:
    """Write ``data`` + ``trailer`` to ``path`` with ``O_DIRECT``; ``False`` (nothing
    written) when the file system refuses it."""
    data = data.cast("B")
    return _atomic_write(path, lambda fd: _fill_direct(fd, data, trailer), direct=True)


def _write_buffered(path: Path, data: memoryview, trailer: bytes = b"") -> None:
    """Write ``data`` + ``trailer`` to ``path`` through the page cache."""
    data = data.cast("B")

    def fill(fd: int) -> None:
        # One system call for the values and their checksum, then whatever a short write
        # left (none in practice).
        parts = [data, memoryview(trailer)]
        written = os.writev(fd, parts) if hasattr(os, "writev") else 0
        for part in parts:
            done = min(written, len(part))
            written -= done
            _write_all(fd, part[done:])

    _atomic_write(path, fill, direct=False)


def write_file(path: Path, data: memoryview, *, direct: bool, trailer: bytes = b"") -> bool:
    """Write ``data`` followed by ``trailer`` (a chunk's checksum) to ``path`` atomically
    (whole or absent), in the calling thread.

    With ``direct``, values of :data:`DIRECT_MIN_BYTES` or more go around the page cache.
    The parent folder must exist.  Returns whether ``O_DIRECT`` is still usable here
    (``False`` once the file system refused it; the value was then written buffered).
    """
    if direct and data.nbytes >= DIRECT_MIN_BYTES:
        if _write_direct(path, data, trailer):
            return True
        direct = False
    _write_buffered(path, data, trailer)
    return direct


class DirectLocalStore(LocalStore):
    """:class:`~zarr.storage.LocalStore` writing values of :data:`DIRECT_MIN_BYTES` or
    more with ``O_DIRECT`` (see the module docstring); reads are unchanged."""

    _direct = True  # cleared on the first refusal

    async def set(self, key: str, value: Buffer) -> None:
        """Write ``value`` at ``key``: large values around the page cache."""
        if not (self._direct and isinstance(value, Buffer) and len(value) >= DIRECT_MIN_BYTES):
            return await super().set(key, value)
        if not self._is_open:
            await self._open()
        self._check_writable()
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        data = memoryview(value.as_buffer_like())
        if not await asyncio.to_thread(_write_direct, path, data):
            self._direct = False
            await super().set(key, value)
        return None
