"""What the registry holds per served model (LoadedModel over OnnxModel or TaughtModel) and
how it tells that a bundle's files changed; re-exported by app.registry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from app.bundle import METADATA_FILE, Bundle
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


def fingerprint(directory: Path) -> Fingerprint:
    out: list[int] = []
    for f in (directory / METADATA_FILE, directory / "model.onnx"):
        try:
            st = f.stat()
        except OSError:
            out.extend((0, 0, 0))
            continue
        out.extend((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


def version_key(version: str) -> tuple[int, str]:
    number = ascii_uint(version)
    return (-1, version) if number is None else (number, version)
