"""What the registry holds per served model (LoadedModel over OnnxModel or TaughtModel) and
how it tells that a bundle's files changed; re-exported by app.registry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from app.bundle import (
    LABELS_FILE,
    METADATA_FILE,
    MODEL_FILE,
    Bundle,
    BundleError,
    read_metadata,
)
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
_NAMED: dict[str, tuple[Fingerprint, tuple[str, ...]]] = {}  # folder -> metadata stat, its files
_NAMED_MAX: Final = 20_000


def _stat(path: Path) -> Fingerprint:
    try:
        st = path.stat()  # through a link: the file that will be read
    except OSError:
        return (0, 0, 0, 0, 0, 0)
    # not the change time: a hard link made elsewhere (a backup tool, a copy by links) moves
    # it, and every bundle was loaded again (round 28); a chmod or chown is seen by its values
    return (st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_size)


def _named_files(directory: Path, meta: Fingerprint) -> tuple[str, ...]:
    """The labels and model files metadata.json names (the defaults when it cannot be read),
    parsed again only when metadata.json changed."""
    cached = _NAMED.get(str(directory))
    if cached is not None and cached[0] == meta:
        return cached[1]
    names = (LABELS_FILE, MODEL_FILE)
    path = directory / METADATA_FILE
    try:
        readable = path.is_file()  # never a FIFO: the poll must not block on it
    except OSError:  # a folder this user cannot enter (round 29): the load refuses it
        readable = False
    if readable:
        try:
            parsed = read_metadata(path)
            names = (parsed.labels_file, parsed.artifact.file)
        except BundleError:
            pass  # the load says what is wrong with it
    if len(_NAMED) >= _NAMED_MAX:
        _NAMED.clear()
    _NAMED[str(directory)] = (meta, names)
    return names


def fingerprint(directory: Path) -> Fingerprint:
    """The folder and the files a load reads (metadata.json, and the labels and model files it
    names), each by inode, mode, owner, modification time and size. Round 26: only
    metadata.json and model.onnx counted, so a labels.txt rewritten in place was never
    reloaded, a chmod was never seen (it changes ctime alone), and a bundle refused while a
    copy was half done stayed refused once whole. Other files (a log, an editor's swap file,
    the model card, a taught model's standalone download) do not count: a folder with a file
    that keeps changing was reloaded, and thrown away, at every poll. The folder's own inode
    changes when another one is swapped in by rename."""
    try:
        out = [directory.stat().st_ino]
    except OSError:
        return (0,)
    meta = _stat(directory / METADATA_FILE)
    out += meta
    for name in _named_files(directory, meta):
        out += _stat(directory / name)
    return tuple(out)


class Reload(Enum):
    """A load whose folder changed while it was read: neither it nor its failure counts."""

    AGAIN = "again"


AGAIN: Final = Reload.AGAIN
Read = tuple[Path, Fingerprint]  # a bundle folder and its fingerprint before it was read


def version_key(version: str) -> tuple[int, str]:
    number = ascii_uint(version)
    return (-1, version) if number is None else (number, version)
