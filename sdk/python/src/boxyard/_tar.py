"""Tar streams for the files endpoints, with the stdlib ``tarfile``: archives made piece by piece as they are sent
(never whole in memory), and archives read in stream mode (``r|``) as they arrive."""

from __future__ import annotations

import io
import os
import posixpath
import stat
import tarfile
import time
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, List, Optional, Tuple, Union

from ._errors import UnsafeArchiveError

__all__ = ["single_file_tar", "iter_tar", "ChunkReader", "extract_stream", "read_single_file"]

BLOCK = tarfile.BLOCKSIZE
CHUNK = 256 * 1024

PathLike = Union[str, "os.PathLike[str]"]


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _pad(n: int) -> bytes:
    rest = n % BLOCK
    return b"\0" * (BLOCK - rest) if rest else b""


def _end() -> bytes:
    # Two zero blocks end the archive.
    return b"\0" * (2 * BLOCK)


def single_file_tar(name: str, data: bytes, mode: int = 0o644) -> bytes:
    """An archive of one regular file ``name`` holding ``data``."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = int(time.time())
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return _header(info) + data + _pad(len(data)) + _end()


def _walk(root: Path, arcname: str) -> Iterator[Tuple[Path, str]]:
    """``root`` and, for a directory, everything under it (sorted, symbolic links not followed)."""
    yield root, arcname
    if root.is_dir() and not root.is_symlink():
        for entry in sorted(os.scandir(root), key=lambda e: e.name):
            yield from _walk(Path(entry.path), posixpath.join(arcname, entry.name))


class _Coalesce:
    """Gathers small pieces into chunks of about ``CHUNK`` bytes."""

    def __init__(self) -> None:
        self.parts: List[bytes] = []
        self.size = 0

    def add(self, b: bytes) -> Optional[bytes]:
        self.parts.append(b)
        self.size += len(b)
        if self.size >= CHUNK:
            return self.take()
        return None

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts, self.size = [], 0
        return out


def iter_tar(local_path: PathLike, arcname: Optional[str] = None) -> Iterator[bytes]:
    """The archive of a local file or directory tree, in chunks, read from disk as it goes.

    Entries are named under ``arcname`` (default: the path's last component); owners are reset to root; symbolic
    links are archived as links; sockets and devices are left out. A file that changes size while it is read fails
    the upload (an archive with the wrong bytes is never sent as if it were right).
    """
    root = Path(local_path)
    if not os.path.lexists(root):
        raise FileNotFoundError(f"{root} does not exist")
    name = arcname if arcname is not None else (root.resolve().name if root.name in ("", ".", "..") else root.name)
    name = name.strip("/") or "root"
    tf = tarfile.TarFile(fileobj=io.BytesIO(), mode="w")  # only for gettarinfo
    out = _Coalesce()
    for path, arc in _walk(root, name):
        st = os.lstat(path)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            continue
        info = tf.gettarinfo(str(path), arcname=arc)
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        # Whole seconds: a fractional mtime would cost a PAX header per entry.
        info.mtime = int(info.mtime)
        chunk = out.add(_header(info))
        if chunk:
            yield chunk
        if info.isreg():
            remaining = info.size
            with open(path, "rb") as f:
                while remaining > 0:
                    piece = f.read(min(CHUNK, remaining))
                    if not piece:
                        raise OSError(f"{path} shrank while it was being uploaded")
                    remaining -= len(piece)
                    # Data goes out as read, after what was gathered before it (chunks stay <= CHUNK).
                    if out.size:
                        yield out.take()
                    if len(piece) < CHUNK // 4:
                        out.add(piece)
                    else:
                        yield piece
                if f.read(1):
                    raise OSError(f"{path} grew while it was being uploaded")
            chunk = out.add(_pad(info.size))
            if chunk:
                yield chunk
    out.add(_end())
    yield out.take()


class ChunkReader(io.RawIOBase):
    """A binary file reading from an iterator of byte chunks (for ``tarfile.open(fileobj=..., mode="r|")``)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__()
        self._it = iter(chunks)
        self._buf = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: "bytearray | memoryview") -> int:  # type: ignore[override]
        while len(self._buf) - self._pos == 0:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
            self._pos = 0
        n = min(len(b), len(self._buf) - self._pos)
        b[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        return n


def read_single_file(fileobj: IO[bytes], path: str) -> bytes:
    """The content of the first entry of an archive, which must be a regular file."""
    with tarfile.open(fileobj=fileobj, mode="r|") as tf:
        for member in tf:
            if member.isdir():
                raise IsADirectoryError(f"{path} is a directory in the box (use files.download)")
            if not member.isreg():
                raise ValueError(f"{path} is not a regular file in the box")
            f = tf.extractfile(member)
            assert f is not None
            return f.read()
    raise FileNotFoundError(f"{path}: the box sent an empty archive")


def _check_member(member: tarfile.TarInfo, dest: Path) -> None:
    """Refuses an entry that would land outside ``dest`` (a fallback for Pythons without ``tarfile.data_filter``)."""
    name = member.name
    if name.startswith("/") or ".." in Path(name).parts:
        raise UnsafeArchiveError(f"archive entry {name!r} would land outside {dest}")
    target = (dest / name).resolve()
    if dest != target and dest not in target.parents:
        raise UnsafeArchiveError(f"archive entry {name!r} would land outside {dest}")
    if member.issym() or member.islnk():
        link = member.linkname
        base = target.parent if member.issym() else dest
        resolved = (base / link).resolve() if not link.startswith("/") else Path(link)
        if link.startswith("/") or (dest != resolved and dest not in resolved.parents):
            raise UnsafeArchiveError(f"archive link {name!r} -> {link!r} points outside {dest}")


def extract_stream(fileobj: IO[bytes], dest: PathLike, on_entry: Optional[Callable[[str], None]] = None) -> List[Path]:
    """Unpacks an archive read in stream mode into the directory ``dest`` (created if needed); returns the paths
    written. Entries that would land outside ``dest`` (absolute names, ``..``, links pointing out) are refused with
    :class:`UnsafeArchiveError`; devices and FIFOs (archived without data) are skipped."""
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    data_filter = getattr(tarfile, "data_filter", None)
    written: List[Path] = []
    dirs: List[Tuple[Path, tarfile.TarInfo]] = []
    with tarfile.open(fileobj=fileobj, mode="r|") as tf:
        for member in tf:
            if member.ischr() or member.isblk() or member.isfifo():
                continue
            if data_filter is not None:
                try:
                    checked = data_filter(member, str(root))
                except tarfile.FilterError as e:
                    raise UnsafeArchiveError(f"archive entry {member.name!r} refused: {e}") from e
                if checked is None:
                    continue
                member = checked
            else:
                _check_member(member, root)
                # Files belong to the caller, whatever owners the box had.
                member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
            target = root / member.name
            if member.isdir():
                # Modes of directories are set at the end: a read-only directory must still take its files.
                target.mkdir(parents=True, exist_ok=True)
                dirs.append((target, member))
            else:
                if data_filter is not None:
                    tf.extract(member, str(root), set_attrs=True, filter="fully_trusted")  # checked above
                else:
                    tf.extract(member, str(root), set_attrs=True)
            written.append(target)
            if on_entry is not None:
                on_entry(member.name)
    for target, member in reversed(dirs):
        try:
            os.chmod(target, member.mode & 0o7777 if member.mode is not None else 0o755)
            os.utime(target, (member.mtime, member.mtime))
        except OSError:
            pass
    return written
