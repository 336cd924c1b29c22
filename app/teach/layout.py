"""The class-folder rule shared by folders and zips: which entries are hidden, and whether a
folder holds at least one class subfolder with an image (checked before any catalog is made)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from app.errors import InvalidRequest
from app.imaging import ACCEPTED_TEXT, sniff_format

_IGNORED: Final = ("__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini")
EXAMPLE: Final = "e.g. cat/1.jpg, dog/2.png"
ZIP_LAYOUT: Final = f"put one folder per class in it, with that class's images inside ({EXAMPLE})"


def hidden(parts: tuple[str, ...]) -> bool:
    """A hidden or system file or folder (.name, __MACOSX, Thumbs.db ...): never a class or image."""
    return any(p.startswith(".") or p in _IGNORED for p in parts)


def class_root(root: Path) -> Path:
    """The folder whose subfolders are the classes: `root`, or the folder inside it when it
    holds just one folder that holds folders (an export wrapped in a folder or two), as zips
    are read. Without it, `a/b/{cat,dog}` made one class named "a" (round 25)."""
    while True:
        entries = [p for p in root.iterdir() if not hidden((p.name,))]
        if len(entries) != 1 or not entries[0].is_dir():
            return root
        inner = [p for p in entries[0].iterdir() if not hidden((p.name,))]
        folders = sum(p.is_dir() for p in inner)
        if folders < 2 and (folders == 0 or folders != len(inner)):
            return root  # root/<one class>/<its images>: one class, said later
        root = entries[0]


def check_class_folder(root: Path) -> int:
    """Refuses (422) a path that is not a folder, or a folder in which no class subfolder holds
    a file that reads as an image: said before a catalog is made, not after it is left empty.
    Returns how many class subfolders hold one (counted up to 2)."""
    if not root.is_dir():
        raise InvalidRequest(
            f"{root} is not a folder; --data-dir takes a folder with one subfolder per class, "
            f"that class's images inside ({EXAMPLE})."
        )
    root = class_root(root)
    classes = 0
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not hidden((p.name,))):
        for path in sorted(class_dir.rglob("*")):
            if path.is_file() and not hidden(path.relative_to(root).parts) and _image(path):
                classes += 1
                break
        if classes == 2:
            break
    if classes:
        return classes
    raise InvalidRequest(
        f"{root} has no class subfolder with an image in it; put one subfolder per class there, "
        f"that class's images inside ({EXAMPLE}). Images are {ACCEPTED_TEXT}."
    )


def _image(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return sniff_format(f.read(64)) is not None
    except OSError:
        return False
