"""Atomic file writes: a crash or a kill never leaves half a file under the final name."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temp file beside `path` (named by host and process, so machines sharing a
    folder never collide), flush it to disk, then rename it onto `path`."""
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}-{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
