"""Reading torch.distributed.checkpoint (DCP) folders without running code from them.

DCP's file-system reader unpickles a folder's `.metadata` with the full `pickle.load`, and its
default load planner reads each non-tensor value (the optimizer's hyper-parameters) with
`torch.load(weights_only=False)`: a crafted folder runs any code it likes on load. Unless the
caller trusts the folder (`trust=True`, then DCP's own readers are used):

- `.metadata` is read by an unpickler that builds only the classes DCP's metadata is made of
  (the Python documentation's "Restricting Globals" recipe for `pickle`); anything else is a
  one-line `DataError`;
- non-tensor values go through torch's weights-only unpickler;
- tensors are read by DCP with `weights_only=True` already.

The metadata is read before `dcp.load` starts (DCP logs a traceback when its own read fails), and
handed to it by `SafeReader`.
"""

from __future__ import annotations

import io
import os
import pathlib
import pickle
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint import filesystem as dcp_filesystem
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

from speed.errors import DataError

METADATA_FILE = ".metadata"

# What a DCP .metadata pickle is made of: the metadata dataclasses and enum, the storage record
# of the file-system writer, torch.Size, dtypes and layouts, and the checkpoint's path.
_METADATA_CLASSES = [
    getattr(dcp_metadata, name)
    for name in (
        "Metadata",
        "StorageMeta",
        "MetadataIndex",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "TensorProperties",
        "_MEM_FORMAT_ENCODING",
    )
    if hasattr(dcp_metadata, name)
]
_ALLOWED: dict[tuple[str, str], Any] = {
    (obj.__module__, obj.__qualname__): obj
    for obj in [
        *_METADATA_CLASSES,
        dcp_filesystem._StorageInfo,
        pathlib.PurePosixPath,
        pathlib.PosixPath,
        pathlib.PureWindowsPath,
        pathlib.WindowsPath,
    ]
}
_ALLOWED[("torch", "Size")] = torch.Size
_ALLOWED[("torch.serialization", "_get_layout")] = torch.serialization._get_layout


class _MetadataUnpickler(pickle.Unpickler):
    """An unpickler whose globals are only the classes of `_ALLOWED` and torch's dtypes."""

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None and module == "torch":
            found = getattr(torch, name, None)
            found = found if isinstance(found, torch.dtype) else None
        if found is None:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of checkpoint metadata")
        return found


def read_metadata(folder: str | os.PathLike, trust: bool = False) -> dcp_metadata.Metadata:
    """The DCP metadata of `folder`, read without running code unless `trust` (then with the full
    unpickler, as DCP does). DataError naming the file when it is missing, broken, or (not
    `trust`) holds other objects."""
    path = Path(folder) / METADATA_FILE
    try:
        with open(path, "rb") as f:
            metadata = pickle.load(f) if trust else _MetadataUnpickler(f).load()
    except FileNotFoundError:
        raise DataError(f"sharded checkpoint {folder} has no {METADATA_FILE}") from None
    except pickle.UnpicklingError as error:
        if "not part of checkpoint metadata" in str(error):
            raise DataError(
                f"{path}: this file needs code to load: pass trust_checkpoint=true if you trust "
                f"its source ({error})"
            ) from None
        raise DataError(f"{path} is corrupt or truncated ({error})") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as error:
        raise DataError(
            f"{path} is corrupt or truncated ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(metadata, dcp_metadata.Metadata) or metadata.storage_data is None:
        raise DataError(f"{path} holds no checkpoint metadata ({type(metadata).__name__})")
    return metadata


class SafeReader(FileSystemReader):
    """DCP's file-system reader of `folder`, serving the metadata already read by
    `read_metadata` instead of unpickling the file again."""

    def __init__(self, folder: str | os.PathLike, metadata: dcp_metadata.Metadata):
        super().__init__(folder)
        self._metadata = metadata

    def read_metadata(self, *args: Any, **kwargs: Any) -> dcp_metadata.Metadata:
        if self._metadata.storage_meta is None:
            self._metadata.storage_meta = dcp_metadata.StorageMeta()
        self._metadata.storage_meta.load_id = self.load_id
        return self._metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's default load planner, reading non-tensor values with the weights-only unpickler
    unless `trust`."""

    def __init__(self, trust: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.trust = trust

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        if self.trust:
            super().load_bytes(read_item, value)
            return
        loaded = torch.load(value, weights_only=True)
        fqn = read_item.dest_index.fqn
        if not self.flatten_state_dict:
            self.state_dict[fqn] = loaded
            return
        # The flattened key's path into the nested state dict (its containers exist: the
        # state dict being filled is the template).
        *parents, last = self.mappings[fqn]
        container = self.original_state_dict
        for key in parents:
            container = container[key]
        container[last] = loaded
