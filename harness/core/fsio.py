"""File primitives used wherever the harness writes: atomic replacement and advisory locks.

``atomic_write`` writes to a temporary file in the target's directory, fsyncs it and renames
it over the target, so a reader (or a crash) sees the old file or the new one, never half of
one; ``atomic_path`` does the same for a writer that needs a file name. ``locked`` holds an exclusive ``flock`` on a file for the duration of a ``with`` block.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX); skipped silently where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[IO[Any]], None] | bytes | str) -> Path:
    """Replace ``path`` atomically with what ``write`` produces (bytes, text, or a callback
    that writes to a binary file object). The directory is created when missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            if isinstance(write, str):
                fh.write(write.encode())
            elif isinstance(write, bytes):
                fh.write(write)
            else:
                write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` (same suffix) for a writer that wants a file name
    (``AnnData.write_h5ad``): renamed over ``path`` when the block ends normally, removed when
    it raises or is interrupted — ``path`` is never left half-written."""
    import uuid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial{path.suffix}")
    try:
        yield tmp
        if tmp.is_dir() or not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {path}")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_files(path: Path) -> Iterator[Path]:
    """Like :func:`atomic_path` for a writer that may write sibling files too (a ``_filtered``
    companion): it writes ``path``'s name inside a temporary directory beside ``path``; when
    the block ends normally each file written there is renamed into ``path``'s directory (each
    whole), when it raises or is interrupted the directory is removed."""
    import shutil
    import uuid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = path.parent / f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial"
    stage.mkdir()
    try:
        yield stage / path.name
        if not (stage / path.name).is_file():
            raise FileNotFoundError(f"nothing was written to {path}")
        for file in sorted(stage.iterdir()):
            os.replace(file, path.parent / file.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    fsync_dir(path.parent)


@contextlib.contextmanager
def locked(path: Path, timeout_s: float | None = None) -> Iterator[int]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing); yields the descriptor.

    ``timeout_s=None`` waits as long as it takes; otherwise TimeoutError after that long.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if timeout_s is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"waited {timeout_s:.0f} s for the lock {path}"
                        ) from None
                    time.sleep(0.05)
        yield fd
    finally:
        os.close(fd)  # releases the lock
