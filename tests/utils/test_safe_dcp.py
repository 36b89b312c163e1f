"""speed.utils.safe_dcp: a torch.distributed.checkpoint folder is read without running code from
it (its metadata by an allow-list unpickler, its non-tensor values weights-only), unless trusted."""

import pickle
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from speed.errors import DataError
from speed.utils.fsdp import read_into
from speed.utils.safe_dcp import SafeLoadPlanner, read_metadata


class _Payload:
    """Unpickling this creates `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _save(folder: Path, state: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DCP without a process group
        dcp.save(state, checkpoint_id=str(folder))


def test_metadata_and_values_round_trip(tmp_path):
    saved = {"w": torch.arange(6.0).reshape(2, 3), "lr": 0.5, "betas": (0.9, 0.99), "name": "x"}
    _save(tmp_path / "ok", saved)
    metadata = read_metadata(tmp_path / "ok")
    assert set(metadata.state_dict_metadata) == {"w", "lr", "betas", "name"}
    loaded = {"w": torch.zeros(2, 3), "lr": None, "betas": None, "name": None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        read_into(tmp_path / "ok", metadata, loaded, SafeLoadPlanner())
    assert torch.equal(loaded["w"], saved["w"])
    assert (loaded["lr"], loaded["betas"], loaded["name"]) == (0.5, (0.9, 0.99), "x")


def test_a_payload_among_the_values_never_runs(tmp_path):
    marker = tmp_path / "ran"
    _save(tmp_path / "evil", {"w": torch.ones(2), "extra": _Payload(marker)})
    metadata = read_metadata(tmp_path / "evil")
    with pytest.raises(DataError, match="evil cannot be read .*UnpicklingError"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read_into(
                tmp_path / "evil", metadata, {"w": torch.zeros(2), "extra": None}, SafeLoadPlanner()
            )
    assert not marker.exists()


def test_metadata_of_other_objects_is_refused_unless_trusted(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil/.metadata").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(DataError, match="this file needs code to load: pass trust_checkpoint"):
        read_metadata(tmp_path / "evil")
    assert not marker.exists()
    with pytest.raises(DataError, match="holds no checkpoint metadata"):
        read_metadata(tmp_path / "evil", trust=True)
    assert marker.exists()


@pytest.mark.parametrize("content", [b"", b"\x80\x04garbage", b"not a pickle"])
def test_broken_metadata_is_one_line(tmp_path, content):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad/.metadata").write_bytes(content)
    with pytest.raises(DataError, match="bad/.metadata is corrupt or truncated"):
        read_metadata(tmp_path / "bad")
