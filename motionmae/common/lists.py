"""List files: which videos a command reads, with their labels and keys.

A list file has one video a line, `relative/path.mp4 label` (VideoMAE /
MMAction2 format; paths relative to the list's folder; the label is optional).
A folder stands for every video under it, unlabelled; a video file for itself.
A video's key (its name in the motion cache and in shards) is its path
relative to the list's folder, e.g. `videos/jump/jump_00007.mp4`, so two videos
with the same file name in different folders get different keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from motionmae.errors import MotionMAEError

# File name endings taken for videos when a folder is searched.
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp"}


class ListError(MotionMAEError, ValueError):
    """A list file or folder that cannot be read; names the file and line."""


@dataclass(frozen=True)
class Item:
    path: Any  # a Path; in a shard stream a "URL:key" str, or the io.video.NamedBytes of the sample being read
    label: int  # -1: unlabelled
    key: str  # the video's name in the motion cache: its path relative to the list's folder


def video_key(path, root) -> str:
    """Cache key of a video: its path relative to `root` (posix), or its absolute path outside it."""
    path, root = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return "_abs" + path.as_posix()


def read_list(source) -> list[Item]:
    """Videos of a list file (`path label` lines), of a folder (recursive, unlabelled), or one video file."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES:
        return [Item(source, -1, source.name)]
    if source.is_dir():
        items = [
            Item(p, -1, video_key(p, source)) for p in sorted(source.rglob("*")) if p.suffix.lower() in VIDEO_SUFFIXES
        ]
        if not items:
            raise ListError(f"{source}: no videos found in this folder")
        return items
    if not source.is_file():
        raise ListError(f"{source}: no such list file or folder")
    try:
        text = source.read_text()
    except UnicodeDecodeError:
        raise ListError(f"{source}: not a list file (binary content), folder or video") from None
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) > 2 or (len(fields) == 2 and not fields[1].lstrip("-").isdigit()):
            raise ListError(f"{source}:{number}: expected 'path [label]', got {line!r}")
        path = Path(fields[0])
        path = path if path.is_absolute() else source.parent / path
        items.append(Item(path, int(fields[1]) if len(fields) == 2 else -1, video_key(path, source.parent)))
    if not items:
        raise ListError(f"{source}: the list names no videos")
    return items
