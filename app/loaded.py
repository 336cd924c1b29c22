"""What the registry holds per served model (LoadedModel over OnnxModel or TaughtModel) and
how it tells that a bundle's files changed; re-exported by app.registry."""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from app.bundle import Bundle
from app.fsutil import TMP_PREFIX
from app.numtext import ascii_uint
from app.runtime import ModelOutput


class ServedModel(Protocol):
    """What predict and catalogs use of a model: OnnxModel and TaughtModel both offer it."""

    bundle: Bundle
    provider: str

    @property
    def input_shape(self) -> tuple[int, int, int]: ...

    def run(self, batch: npt.NDArray[np.float32]) -> ModelOutput: ...

    def warm_up(self, runs: int) -> float: ...


@dataclass(frozen=True)
class LoadedModel:
    model: ServedModel
    load_ms: float
    warmup_ms: float
    loaded_at: datetime

    @property
    def name(self) -> str:
        return self.model.bundle.name

    @property
    def version(self) -> str:
        return self.model.bundle.metadata.version

    @property
    def taught(self) -> bool:
        return self.model.bundle.metadata.backbone is not None


# What identifies a bundle's files on disk: a change means "load it again".
Fingerprint = tuple[int, ...]
# Written by the server into a taught bundle's folder after it was published: the standalone
# graph a download joins once (app/teach/download.py).
STANDALONE_FILE: Final = "standalone.onnx"
DERIVED_FILES: Final = frozenset({STANDALONE_FILE})


def fingerprint(directory: Path) -> Fingerprint:
    """The folder itself and every file in it, each by inode, change time, modification time
    and size. Round 26: only metadata.json and model.onnx counted, so a rewritten labels.txt
    (or a renamed artifact) was never reloaded, a chmod was never seen (it changes ctime
    alone), and a bundle refused while a copy was half done stayed refused once it was whole.
    The folder's own inode changes when another folder is swapped in by rename. Files the
    server itself writes into a bundle (a taught model's standalone download, temporary
    files) do not count."""
    try:
        out = [directory.stat().st_ino]
        with os.scandir(directory) as found:
            entries = sorted(found, key=lambda e: e.name)
        for entry in entries:
            if entry.name.startswith(TMP_PREFIX) or entry.name in DERIVED_FILES:
                continue
            try:
                f = entry.stat()  # through a link: the file that will be read
            except OSError:
                f = None
            name = zlib.crc32(entry.name.encode("utf-8", "surrogateescape"))
            out += (
                (name, 0, 0, 0, 0)
                if f is None
                else (name, f.st_ino, f.st_ctime_ns, f.st_mtime_ns, f.st_size)
            )
    except OSError:
        return (0,)
    return tuple(out)


class Reload(Enum):
    """A load whose folder changed while it was read: neither it nor its failure counts."""

    AGAIN = "again"


AGAIN: Final = Reload.AGAIN
Read = tuple[Path, Fingerprint]  # a bundle folder and its fingerprint before it was read


def version_key(version: str) -> tuple[int, str]:
    number = ascii_uint(version)
    return (-1, version) if number is None else (number, version)
