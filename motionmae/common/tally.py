"""How many videos of a list a command read, and which it skipped and why: one schema for every command.

    tally = VideoTally(videos=5)
    tally.mark_read(0)
    tally.skip(3, "clips/x.mp4", "not_a_video", "not a readable video (InvalidDataError: ...)")
    tally.to_dict()  # {"videos": 5, "read": 1, "skipped": 1, "skipped_reasons": {"not_a_video": 1},
                     #  "skipped_videos": [{"path": "clips/x.mp4", "kind": "not_a_video", "reason": "..."}]}
    tally.summary()  # "1 of 5 videos read, 1 skipped (not_a_video 1), 3 not reached"

Videos are named by their position in the command's list. A video read at
least once counts as read even if another attempt failed; `read + skipped`
is below `videos` when a run ended before reaching every video (a training
run shorter than an epoch). `prepare` writes this into its report, training
into metrics.jsonl and the checkpoint, `linear-probe` and `evaluate` into
their JSON.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field


def skip_kind(err: BaseException) -> str:
    """Short name of a failure for counting, from its class: NotAVideoError -> "not_a_video"."""
    name = type(err).__name__.removesuffix("Error") or type(err).__name__
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@dataclass
class VideoTally:
    """Videos read and skipped (with reasons) of one list of `videos`; see the module docstring."""

    videos: int  # videos in the list
    read: set[int] = field(default_factory=set)  # positions of the videos read
    skipped: dict[int, dict] = field(default_factory=dict)  # position -> {"path", "kind", "reason", ...}

    def mark_read(self, position: int) -> None:
        self.read.add(int(position))

    def skip(self, position: int, path, kind: str, reason: str, **extra) -> None:
        self.skipped[int(position)] = {"path": str(path), "kind": kind, "reason": reason, **extra}

    def update(self, batch: dict) -> None:
        """Count a data-loader batch: "video" int (B,) positions read (-1: none), "skipped" list of
        {"position", "path", "kind", "reason"} (see `data.collate`)."""
        for position in batch["video"].tolist():
            if position >= 0:
                self.mark_read(position)
        for entry in batch["skipped"]:
            entry = dict(entry)
            self.skip(entry.pop("position"), **entry)

    def merge(self, other: VideoTally) -> None:
        """Add another process's tally of the same list."""
        self.read |= other.read
        self.skipped.update(other.skipped)

    def to_dict(self) -> dict:
        """The shared JSON schema (module docstring); skipped videos that were also read are not counted."""
        skipped = [entry for position, entry in sorted(self.skipped.items()) if position not in self.read]
        return {
            "videos": self.videos,
            "read": len(self.read),
            "skipped": len(skipped),
            "skipped_reasons": dict(Counter(entry["kind"] for entry in skipped)),
            "skipped_videos": skipped,
        }

    def state(self) -> dict:
        """Plain types for a checkpoint (loadable with `torch.load(weights_only=True)`)."""
        return {"videos": self.videos, "read": sorted(self.read), "skipped": [[p, e] for p, e in self.skipped.items()]}

    @classmethod
    def from_state(cls, state: dict) -> VideoTally:
        return cls(state["videos"], set(state["read"]), {int(p): e for p, e in state["skipped"]})

    def summary(self) -> str:
        return describe(self.to_dict())


def describe(counts: dict) -> str:
    """One line of a `VideoTally.to_dict()`, e.g. "3 of 5 videos read, 1 skipped (not_a_video 1), 1 not reached"."""
    reasons = ", ".join(f"{kind} {n}" for kind, n in counts["skipped_reasons"].items())
    unreached = counts["videos"] - counts["read"] - counts["skipped"]
    return (
        f"{counts['read']} of {counts['videos']} videos read, {counts['skipped']} skipped"
        + (f" ({reasons})" if reasons else "")
        + (f", {unreached} not reached" if unreached else "")
    )
