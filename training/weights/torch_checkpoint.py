"""Read a PyTorch checkpoint (``torch.save`` of a state dict) into numpy arrays without PyTorch.

Two on-disk layouts exist:
- zip (torch >= 1.6): ``<prefix>/data.pkl`` plus one raw little-endian storage per file
  ``<prefix>/data/<key>``;
- legacy (torch < 1.6): five pickles in a row (magic number, protocol version, system info,
  the object, the list of storage keys), then each storage as an int64 element count followed
  by its raw bytes, in the order of that key list.

In both, the object pickle refers to storages through persistent ids
``("storage", <storage class>, key, location, numel[, view metadata])`` and builds tensors
with ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``. The unpickler
below maps exactly those calls onto numpy and refuses every other global, so reading an
untrusted checkpoint cannot run code.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# torch storage class name -> numpy dtype (bfloat16 is widened to float32 on read).
_STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "UntypedStorage": "u1",
}


class CheckpointError(ValueError):
    """The file is not a PyTorch checkpoint this reader understands."""


@dataclass
class _StorageRef:
    """A storage named in the pickle; its bytes are attached once read."""

    key: str
    dtype: str
    numel: int
    data: npt.NDArray[Any] | None = None

    def array(self) -> npt.NDArray[Any]:
        if self.data is None:
            raise CheckpointError(f"storage {self.key} was referenced but never read")
        return self.data


@dataclass(frozen=True)
class _TensorStub:
    """A tensor whose storage may not have been read yet (legacy layout reads storages last)."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def materialise(self) -> npt.NDArray[Any]:
        flat = self.storage.array()
        if not self.size:
            return np.array(flat[self.offset])
        needed = (
            self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True)) + 1
        )
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, dtype=flat.dtype)
        if needed > flat.size:
            raise CheckpointError(
                f"tensor of size {self.size} at offset {self.offset} overruns storage "
                f"{self.storage.key} ({flat.size} elements)"
            )
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :],
            shape=self.size,
            strides=tuple(s * flat.itemsize for s in self.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(
    storage: _StorageRef,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _TensorStub:
    return _TensorStub(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(
    data: _TensorStub, requires_grad: bool = False, hooks: Any = None
) -> _TensorStub:
    return data


def _rebuild_parameter_with_state(
    data: _TensorStub, requires_grad: bool, hooks: Any, state: Any
) -> _TensorStub:
    return data


class _StorageClass:
    """Stands in for torch.FloatStorage & co. inside persistent ids."""

    def __init__(self, name: str) -> None:
        self.name = name


_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], storages: dict[str, _StorageRef]) -> None:
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageClass(name)
        fn = _ALLOWED_GLOBALS.get((module, name))
        if fn is None:
            raise CheckpointError(
                f"checkpoint refers to {module}.{name}, which this reader does not allow; "
                "only plain state dicts of tensors are supported"
            )
        return fn

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise CheckpointError(f"unsupported persistent id {pid!r}")
        storage_cls, key, _location, numel = pid[1:5]
        if len(pid) > 5 and pid[5] is not None:
            raise CheckpointError("storage views (pre-1.0 checkpoints) are not supported")
        if not isinstance(storage_cls, _StorageClass):
            raise CheckpointError(f"unknown storage type {storage_cls!r}")
        key = str(key)
        ref = self.storages.get(key)
        if ref is None:
            ref = _StorageRef(key=key, dtype=_STORAGE_DTYPES[storage_cls.name], numel=int(numel))
            self.storages[key] = ref
        return ref


def _decode(raw: bytes, dtype: str, count: int | None = None) -> npt.NDArray[Any]:
    if dtype == "bfloat16":  # the upper half of a float32
        halves = np.frombuffer(raw, dtype="<u2", count=-1 if count is None else count)
        return (halves.astype("<u4") << 16).view("<f4")
    return np.frombuffer(raw, dtype=dtype, count=-1 if count is None else count)


def _materialise(obj: Any) -> Any:
    if isinstance(obj, _TensorStub):
        return obj.materialise()
    if isinstance(obj, dict):
        return type(obj)((k, _materialise(v)) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return type(obj)(_materialise(v) for v in obj)
    return obj


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise CheckpointError(f"{path}: zip checkpoint must hold exactly one data.pkl")
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = f"{prefix}byteorder"
        if byteorder in zf.namelist() and zf.read(byteorder).strip() != b"little":
            raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
        storages: dict[str, _StorageRef] = {}
        obj = _Unpickler(io.BytesIO(zf.read(pkl[0])), storages).load()
        for ref in storages.values():
            raw = zf.read(f"{prefix}data/{ref.key}")
            ref.data = _decode(raw, ref.dtype)
            if ref.data.size < ref.numel:
                raise CheckpointError(f"{path}: storage {ref.key} is truncated")
    return obj


def _load_legacy(path: Path) -> Any:
    with path.open("rb") as f:
        try:
            magic = pickle.load(f)
        except Exception as exc:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint ({exc})") from exc
        if magic != LEGACY_MAGIC:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (bad magic number)")
        protocol = pickle.load(f)
        if protocol != 1001:
            raise CheckpointError(f"{path}: unsupported legacy protocol {protocol}")
        sys_info = pickle.load(f)
        if not sys_info.get("little_endian", True):
            raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
        storages: dict[str, _StorageRef] = {}
        obj = _Unpickler(f, storages).load()
        keys = pickle.load(f)
        for key in keys:
            ref = storages[str(key)]
            itemsize = 2 if ref.dtype == "bfloat16" else np.dtype(ref.dtype).itemsize
            (count,) = struct.unpack("<q", f.read(8))
            raw = f.read(count * itemsize)
            if count != ref.numel or len(raw) != count * itemsize:
                raise CheckpointError(f"{path}: storage {key} is truncated or inconsistent")
            ref.data = _decode(raw, ref.dtype, count)
    return obj


def load_torch_checkpoint(path: Path) -> Any:
    """Unpickle a checkpoint with every tensor turned into a numpy array."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    obj = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
    return _materialise(obj)


def load_torch_state_dict(path: Path) -> dict[str, npt.NDArray[Any]]:
    """A state dict ``{name: array}``; a checkpoint wrapping it as ``{"state_dict": ...}`` works too."""
    obj = load_torch_checkpoint(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return dict(obj)
