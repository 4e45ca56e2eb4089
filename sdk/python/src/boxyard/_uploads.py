"""Snapshot image uploads (read piece by piece, with progress) and the shapes snapshot registration takes."""

from __future__ import annotations

import io
import os
from typing import IO, Any, Callable, Dict, Iterator, Mapping, Optional, Tuple, Union

from ._errors import BoxyardError
from ._models import SnapshotMetadata

__all__ = ["ImageSource", "ImageReader", "image_reader", "metadata_of", "source_of"]

ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]
"""An image to upload: a local path, bytes, or a binary file opened for reading."""

ProgressCallback = Callable[[int, Optional[int]], None]

CHUNK = 1 << 20


class ImageReader:
    """An image read in chunks of 1 MiB, reporting progress; each call of :meth:`chunks` starts over (so a retry
    sends it whole again), which a file that cannot seek allows once only."""

    def __init__(self, image: ImageSource, on_progress: Optional[ProgressCallback]) -> None:
        self._on_progress = on_progress
        self._path: Optional[str] = None
        self._data: Optional[bytes] = None
        self._file: Optional[IO[bytes]] = None
        self._start = 0
        self._started = False
        self.total: Optional[int] = None
        if isinstance(image, (str, os.PathLike)):
            self._path = os.fspath(image)
            self.total = os.path.getsize(self._path)
        elif isinstance(image, (bytes, bytearray, memoryview)):
            self._data = bytes(image)
            self.total = len(self._data)
        elif hasattr(image, "read"):
            self._file = image
            try:
                self._start = image.tell()
                end = image.seek(0, io.SEEK_END)
                image.seek(self._start)
                self.total = end - self._start
            except (OSError, ValueError, AttributeError):
                self._start = -1
        else:
            raise TypeError("image must be a path, bytes, or a binary file")

    def _report(self, sent: int) -> None:
        if self._on_progress is not None:
            self._on_progress(sent, self.total)

    def chunks(self) -> Iterator[bytes]:
        """The image from its start, in chunks."""
        if self._data is not None:
            data = self._data
            return self._from_bytes(data)
        if self._path is not None:
            return self._from_path(self._path)
        assert self._file is not None
        if self._started:
            if self._start < 0:
                raise BoxyardError("the image file cannot seek: it cannot be sent again")
            self._file.seek(self._start)
        self._started = True
        return self._from_file(self._file)

    def _from_bytes(self, data: bytes) -> Iterator[bytes]:
        sent = 0
        self._report(0)
        for i in range(0, len(data), CHUNK):
            piece = data[i : i + CHUNK]
            sent += len(piece)
            yield piece
            self._report(sent)

    def _from_path(self, path: str) -> Iterator[bytes]:
        with open(path, "rb") as f:
            yield from self._from_file(f)

    def _from_file(self, f: IO[bytes]) -> Iterator[bytes]:
        sent = 0
        self._report(0)
        while True:
            piece = f.read(CHUNK)
            if not piece:
                return
            sent += len(piece)
            yield piece
            self._report(sent)

    def headers(self) -> Dict[str, str]:
        """Extra request headers."""
        return {}

    def close(self) -> None:
        """Nothing is kept open between uploads (files opened from a path are closed by their iterator)."""


def image_reader(image: ImageSource, on_progress: Optional[ProgressCallback]) -> ImageReader:
    """The reader of an image upload."""
    return ImageReader(image, on_progress)


def metadata_of(m: Union[SnapshotMetadata, Mapping[str, Any], None]) -> Optional[SnapshotMetadata]:
    """Snapshot metadata from a :class:`SnapshotMetadata` or a mapping (``cmd``, ``env``, ``working_dir``,
    ``user``; other keys are refused)."""
    if m is None or isinstance(m, SnapshotMetadata):
        return m
    unknown = set(m) - {"cmd", "env", "working_dir", "user"}
    if unknown:
        raise ValueError(f"unknown snapshot metadata field(s): {', '.join(sorted(unknown))}")
    cmd = m.get("cmd")
    if isinstance(cmd, str):
        cmd = ["sh", "-c", cmd]
    return SnapshotMetadata(
        cmd=[str(x) for x in (cmd or [])],
        env={str(k): str(v) for k, v in (m.get("env") or {}).items()},
        working_dir=m.get("working_dir"),
        user=m.get("user"),
    )


def source_of(s: Union[Tuple[str, str], Mapping[str, str], None]) -> Optional[Tuple[str, str]]:
    """A snapshot ``source`` as ``(key, digest)``."""
    if s is None:
        return None
    if isinstance(s, tuple):
        return s
    return str(s["key"]), str(s["digest"])
