"""Read torch.distributed.checkpoint's `.metadata` pickle without letting it run code.

A pickle can call only what its unpickler's `find_class` hands out, so `find_class` here looks the
(module, qualified name) pair up in an exact table of the objects DCP's Metadata pickles and refuses
everything else: no dotted names (pickle would follow them through attributes), no prefixes, no
import. The allowed objects are dataclasses, torch.Size, enum members and inert torch constants;
calling any of them builds data and nothing more.

Two more doors are shut. BUILD (pickle's "set this object's state") is allowed only on fresh
instances of DCP's dataclasses: applied to a class, a function or an enum member it would change
process-wide state. And a checkpoint entry that is not a tensor is refused, because DCP's default
load planner reads such an entry with `torch.load(weights_only=False)`; mpcli saves only tensors.
Tensor data itself is read by DCP's FileSystemReader with `torch.load(weights_only=True)`.

What DCP's Metadata pickles (found by reading real saves with torch 2.13): Metadata,
TensorStorageMetadata, ChunkStorageMetadata, TensorProperties (its state holds a
_MEM_FORMAT_ENCODING member), MetadataIndex, StorageMeta, filesystem._StorageInfo, torch.Size,
dtypes as `torch.<name>`, layouts through `torch.serialization._get_layout`, and the checkpoint
path as a pathlib.PosixPath.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path, PosixPath
from types import MappingProxyType
from typing import Any, BinaryIO

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import (
    _MEM_FORMAT_ENCODING,
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)

from mpcli.errors import UnsafeCheckpoint

DCP_METADATA = ".metadata"

# Fresh instances of these may receive pickled state (BUILD); nothing else may.
_DATACLASSES: tuple[type, ...] = (
    Metadata,
    TensorStorageMetadata,
    ChunkStorageMetadata,
    TensorProperties,
    MetadataIndex,
    StorageMeta,
    _StorageInfo,
)
_LAYOUTS = MappingProxyType({str(v): v for v in vars(torch).values() if isinstance(v, torch.layout)})


def _layout(name: str) -> torch.layout:
    """Stands in for torch.serialization._get_layout, whose cache a pickle could otherwise poison."""
    if not isinstance(name, str) or name not in _LAYOUTS:
        raise pickle.UnpicklingError(f"unknown layout {name!r}")
    return _LAYOUTS[name]


def _allowed() -> MappingProxyType[tuple[str, str], Any]:
    """The exact (module, qualified name) pairs a DCP metadata pickle uses, and what each means."""
    table: dict[tuple[str, str], Any] = {
        (cls.__module__, cls.__qualname__): cls for cls in (*_DATACLASSES, _MEM_FORMAT_ENCODING, torch.Size)
    }
    table[("torch.serialization", "_get_layout")] = _layout
    # The checkpoint id is a Path; Python 3.13 moved the class to pathlib._local and pickles it there.
    for module in ("pathlib", "pathlib._local", PosixPath.__module__):
        table[(module, "PosixPath")] = PosixPath
    constants = torch.dtype | torch.layout | torch.memory_format
    table.update({("torch", name): v for name, v in vars(torch).items() if isinstance(v, constants)})
    return MappingProxyType(table)


ALLOWED = _allowed()
_BYTES_ENTRY = (BytesStorageMetadata.__module__, BytesStorageMetadata.__qualname__)


def _shown(text: object, limit: int = 80) -> str:
    """A name taken from the file, escaped so that the message stays one plain line (no markup)."""
    text = str(text)[:limit]
    return "".join(c if c.isascii() and (c.isalnum() or c in "._-<> ") else f"\\x{ord(c):02x}" for c in text)


def _refused(file: Path, why: str) -> UnsafeCheckpoint:
    return UnsafeCheckpoint(f"{file}: refused: {why}")


def _corrupt(file: Path, detail: str = "truncated or corrupt") -> UnsafeCheckpoint:
    return UnsafeCheckpoint(f"{file}: not a torch.distributed.checkpoint metadata file ({detail})")


def _build(self: _MetadataUnpickler) -> None:
    """BUILD, only onto an instance of DCP's dataclasses (the object sits under the state)."""
    target = self.stack[-2] if len(self.stack) >= 2 else None
    if type(target) not in _DATACLASSES:
        what = f"class {target.__qualname__}" if isinstance(target, type) else type(target).__name__
        raise _refused(self.file, f"it sets the state of {_shown(what)}, which a checkpoint never does")
    pickle._Unpickler.load_build(self)


class _MetadataUnpickler(pickle._Unpickler):
    """Pickle's Python unpickler with an exact global table and a guarded BUILD.

    The Python implementation is used because its opcode table can be changed per class; the C one
    offers no hook for BUILD. It is about three times slower: some 16,000 shards read in two seconds.
    """

    dispatch: dict[int, Callable[..., None]] = {
        **pickle._Unpickler.dispatch,
        pickle.BUILD[0]: _build,
    }

    def __init__(self, stream: BinaryIO, file: Path) -> None:
        super().__init__(stream)
        self.file = file

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == _BYTES_ENTRY:
            raise _refused(
                self.file,
                "it declares a non-tensor entry, which mpcli never saves and DCP would load "
                "with an unrestricted torch.load",
            )
        if "." in name or (module, name) not in ALLOWED:
            raise _refused(
                self.file, f"it names {_shown(module)}.{_shown(name)}, which a checkpoint never holds"
            )
        return ALLOWED[(module, name)]

    def persistent_load(self, pid: Any) -> Any:
        raise _refused(self.file, "it holds a persistent reference, which a checkpoint never holds")


def _check_entries(metadata: Metadata, file: Path) -> None:
    """Every entry is a tensor: DCP would unpickle anything else unrestricted."""
    entries = getattr(metadata, "state_dict_metadata", None)
    if not isinstance(entries, dict):
        raise _corrupt(file, "no tensor table")
    for key, entry in entries.items():
        if not isinstance(key, str):
            raise _corrupt(file, "a key that is not a string")
        if not isinstance(entry, TensorStorageMetadata):
            raise _refused(file, f"entry {_shown(key)} is not a tensor, and mpcli saves only tensors")
        props, chunks = getattr(entry, "properties", None), getattr(entry, "chunks", None)
        if not (
            isinstance(getattr(props, "dtype", None), torch.dtype)
            and isinstance(getattr(entry, "size", None), torch.Size)
            and isinstance(chunks, list)
            and all(isinstance(c, ChunkStorageMetadata) for c in chunks)
        ):
            raise _corrupt(file, f"entry {_shown(key)} is malformed")


def _check_storage(metadata: Metadata, file: Path) -> None:
    """Shard locations are file names inside the checkpoint directory, never paths out of it."""
    storage = getattr(metadata, "storage_data", None)
    if not isinstance(storage, dict):
        raise _corrupt(file, "no shard table")
    for index, info in storage.items():
        name = getattr(info, "relative_path", None)
        if not (
            isinstance(index, MetadataIndex)
            and isinstance(info, _StorageInfo)
            and isinstance(name, str)
            and name not in ("", ".", "..")
            and "/" not in name
            and "\\" not in name
        ):
            raise _refused(file, f"a shard location {_shown(name)} is not a file of this checkpoint")
    if not isinstance(getattr(metadata, "storage_meta", None), StorageMeta | None):
        raise _corrupt(file, "malformed storage_meta")


def load_metadata(file: Path) -> Metadata:
    """DCP's metadata from `file`; `UnsafeCheckpoint` (one line naming the file) if refused or unreadable."""
    try:
        with file.open("rb") as stream:
            metadata = _MetadataUnpickler(stream, file).load()
    except UnsafeCheckpoint:
        raise
    except FileNotFoundError:
        raise UnsafeCheckpoint(f"{file}: missing (not a complete checkpoint)") from None
    except OSError as exc:
        raise UnsafeCheckpoint(f"{file}: cannot be read ({exc.strerror or exc})") from None
    except Exception:
        # Only allow-listed constructors ran, so any failure here just means the bytes are not
        # valid metadata: EOFError when truncated, UnpicklingError, TypeError, KeyError and so on.
        raise _corrupt(file) from None
    if not isinstance(metadata, Metadata):
        raise _corrupt(file, f"it holds a {_shown(type(metadata).__name__)}")
    _check_entries(metadata, file)
    _check_storage(metadata, file)
    return metadata


class SafeReader(FileSystemReader):
    """FileSystemReader whose metadata read refuses code and non-tensor entries (DCP itself reads
    tensor data with torch.load(weights_only=True))."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        # DCP asks again with rank=N for per-rank metadata when the global read fails. mpcli writes
        # only the global file, so that retry reads it again and is refused again.
        metadata = load_metadata(Path(self.path) / DCP_METADATA)
        if metadata.storage_meta is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata
