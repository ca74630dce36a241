"""Atomic file writes: a crash or a kill never leaves half a file under the final name."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_open(path: Path, clear_stale: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write `path` through: a temp file beside it (named by host and process, so
    machines sharing a folder never collide), flushed to disk and renamed onto `path` when the block
    ends, removed when the block raises. `clear_stale`: first remove the temp files of `path` that a
    killed run left (only where a single process writes `path`)."""
    if clear_stale:
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}-{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through `atomic_open`."""
    with atomic_open(path) as f:
        f.write(data)
