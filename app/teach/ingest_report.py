"""What an upload of many images did: images added per label, files skipped with the reason,
copies left out, warnings of images added; bounded, so a zip of 190 MB of long entry names
cannot make a 1.1 GB answer (fuzz round 16)."""

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
WARNINGS_TEXT = (
    "images added but of little use, each `name` with its `warning` (a blank picture: one flat "
    f"colour as the model sees it, which predict flags as `image.blank`); the first {LISTED}"
)


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
    warnings: list[dict[str, str]] = field(default_factory=list)  # the first LISTED
    warnings_count: int = 0

    def skip(self, name: str, reason: str) -> None:
        self.skipped_count += 1
        if len(self.skipped) < LISTED:
            self.skipped.append({"name": shown(name), "reason": reason})

    def duplicate(self, copy: CopySkipped) -> None:
        self.duplicates_count += 1
        if len(self.duplicates) < LISTED:
            self.duplicates.append(copy)

    def warn(self, name: str, warning: str) -> None:
        """An image added, but of little use (a blank picture)."""
        self.warnings_count += 1
        if len(self.warnings) < LISTED:
            self.warnings.append({"name": shown(name), "warning": warning})
