"""speed.run.outputs: what made an output, compared key by key."""

import numpy as np

from speed.run.outputs import (
    differences,
    output_name,
    outputs_of,
    provenance_entry,
    read_provenance,
    remove_partial_files,
    same_output,
)


def test_differences_name_each_changed_key_old_to_new():
    old = {"seed": 0, "diffusion": {"noise_schedule": "linear", "steps": 1000}, "eta": 1.0}
    new = {"seed": 0, "diffusion": {"noise_schedule": "cosine", "steps": 1000}, "precision": "bf16"}
    assert differences(old, new) == [
        "precision: fp32 -> bf16",  # left out of records at its default
        "diffusion.noise_schedule: linear -> cosine",
        "eta: 1.0 -> unset",
    ]
    assert differences(new, new) == []


def test_same_output_ignores_only_the_checkpoint_path(tmp_path):
    record = {"checkpoint": "/a/0000001.pt", "checkpoint_sha256": "ab", "num_samples": 6}
    path = tmp_path / "x.npz"
    np.savez(path, arr_0=np.zeros((1, 2, 2, 3), np.uint8), provenance=provenance_entry(record))
    stored = read_provenance(path)
    assert same_output(stored, {**record, "checkpoint": "/moved/0000001.pt"})
    assert not same_output(stored, {**record, "num_samples": 8})
    assert not same_output(stored, {**record, "checkpoint_sha256": "cd"})
    np.savez(path, arr_0=np.zeros((1, 2, 2, 3), np.uint8))
    assert read_provenance(path) is None and not same_output(None, record)
    path.write_bytes(b"not an npz")
    assert read_provenance(path) is None


def test_remove_partial_files_deletes_only_temporary_files(tmp_path):
    kept = [tmp_path / "000001.png", tmp_path / ".lock", tmp_path / "settings.json"]
    stale = [tmp_path / ".000002.png.abc.tmp", tmp_path / ".x.npz.9.tmp"]
    for path in kept + stale:
        path.write_bytes(b"")
    assert sorted(remove_partial_files(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)
    assert remove_partial_files(tmp_path / "absent") == []


def test_outputs_of_other_settings_are_named_by_what_differs():
    records = {"0000004": {"seed": 0, "guidance_scale": 2.0, "checkpoint_sha256": "ab" * 32}}
    stored = records.get
    plain = records["0000004"]
    assert output_name("0000004", plain, stored) == "0000004"
    assert output_name("0000009", {"seed": 5}, stored) == "0000009"  # free: the plain name
    guided = {**plain, "guidance_scale": 4.0, "precision": "bf16"}
    assert output_name("0000004", guided, stored) == "0000004-precision=bf16,guidance_scale=4.0"
    assert output_name("0000004", guided, stored, overwrite=True) == "0000004"
    retrained = {**plain, "checkpoint_sha256": "cd" * 32}
    assert output_name("0000004", retrained, stored) == "0000004-ckpt=cdcdcdcd"
    listed = {**plain, "sample_classes": [0, 3]}
    assert output_name("0000004", listed, stored) == "0000004-sample_classes=_0,3_"
    records["0000004-precision=bf16,guidance_scale=4.0"] = {**guided, "seed": 1}  # a clash
    assert output_name("0000004", guided, stored) == "0000004-precision=bf16,guidance_scale=4.0-2"
    records["0000004-precision=bf16,guidance_scale=4.0-2"] = guided
    assert output_name("0000004", guided, stored) == "0000004-precision=bf16,guidance_scale=4.0-2"


def test_outputs_of_lists_one_checkpoints_outputs(tmp_path):
    for name in ("0000004.npz", "0000004-seed=1.npz", "00000041.npz", "0000005.npz", "x.json"):
        (tmp_path / name).write_bytes(b"")
    assert outputs_of(tmp_path, "0000004", ".npz") == ["0000004", "0000004-seed=1"]
