"""What an upload of many images did: images added per label, files skipped with the reason,
copies left out; bounded, so a zip of 190 MB of long entry names cannot make a 1.1 GB answer
(fuzz round 16)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CopySkipped:
    """An image left out because it copies an item of its label (skip_duplicates)."""

    name: str
    label: str
    duplicate_of: str
    score: float


# A report lists at most this many skipped files and copies (all are counted), each name cut
# to NAME_CHARS: a zip of 190 MB of long entry names had made a 1.1 GB answer (round 16).
LISTED = 100
NAME_CHARS = 256


def shown(name: str) -> str:
    """An entry's name as a report lists it: at most NAME_CHARS characters."""
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 3] + "..."


@dataclass
class IngestReport:
    added: dict[str, int] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)  # the first LISTED
    duplicates: list[CopySkipped] = field(default_factory=list)  # the first LISTED
    skipped_count: int = 0
    duplicates_count: int = 0

    def skip(self, name: str, reason: str) -> None:
        self.skipped_count += 1
        if len(self.skipped) < LISTED:
            self.skipped.append({"name": shown(name), "reason": reason})

    def duplicate(self, copy: CopySkipped) -> None:
        self.duplicates_count += 1
        if len(self.duplicates) < LISTED:
            self.duplicates.append(copy)
