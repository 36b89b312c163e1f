"""Captioned data: the JSON Lines and COCO caption files, their one-line errors, the seeded
caption draw, and the captioned image folder."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from speed.data import CaptionedImageFolder
from speed.data.captions import draw_caption_indices, read_captions
from speed.errors import DataError


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_collects_every_caption_of_a_file(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [
        '{"file": "a.png", "caption": "a  cat"}',
        "",
        '{"file": "b.png", "captions": ["a dog", "one dog"]}',
        '{"file": "a.png", "captions": ["a small cat"]}',
    ])  # fmt: skip
    assert read_captions(path) == {"a.png": ["a cat", "a small cat"], "b.png": ["a dog", "one dog"]}


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"file": "a.png"', r"c.jsonl:2: not JSON"),
        ('{"caption": "x"}', r"c.jsonl:2: expected"),
        ('{"file": "a.png", "caption": "x", "captions": ["y"]}', r"c.jsonl:2: give exactly one"),
        ('{"file": "a.png", "captions": []}', r"c.jsonl:2: \"captions\" must be"),
        ('{"file": "a.png", "caption": "  "}', r"c.jsonl:2: a caption must be"),
    ],
)
def test_a_bad_jsonl_line_is_named_with_its_number(tmp_path, line, message):
    path = write_lines(tmp_path / "c.jsonl", ['{"file": "b.png", "caption": "ok"}', line])
    with pytest.raises(DataError, match=message):
        read_captions(path)


def coco(tmp_path, annotations):
    data = {"images": [{"id": 7, "file_name": "x.jpg"}, {"id": 9, "file_name": "y.jpg"}],
            "annotations": annotations}  # fmt: skip
    path = tmp_path / "captions_train2017.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_captions_by_file_name(tmp_path):
    path = coco(tmp_path, [
        {"image_id": 7, "id": 1, "caption": "A cat.\n"}, {"image_id": 9, "caption": "Two dogs"},
        {"image_id": 7, "caption": "A cat on a mat"},
    ])  # fmt: skip
    assert read_captions(path) == {"x.jpg": ["A cat.", "A cat on a mat"], "y.jpg": ["Two dogs"]}
    with pytest.raises(DataError, match=r"annotations\[1\]: image_id 3 is in no images entry"):
        read_captions(
            coco(tmp_path, [{"image_id": 7, "caption": "a"}, {"image_id": 3, "caption": "b"}])
        )
    with pytest.raises(DataError, match=r"annotations\[0\] needs"):
        read_captions(coco(tmp_path, [{"image_id": 7}]))


def test_caption_draw_is_seeded_and_independent_of_the_split():
    counts = [1 + i % 3 for i in range(8)]
    whole = draw_caption_indices(counts, torch.Generator().manual_seed(5), 8, torch.arange(8))
    again = draw_caption_indices(counts, torch.Generator().manual_seed(5), 8, torch.arange(8))
    assert whole == again and all(0 <= k < c for k, c in zip(whole, counts))
    # two ranks of 4 (positions r + 2 i) each draw their share of the same numbers
    for rank in range(2):
        rows = torch.arange(rank, 8, 2)
        mine = [counts[i] for i in rows]
        part = draw_caption_indices(mine, torch.Generator().manual_seed(5), 8, rows)
        assert part == [whole[i] for i in rows]
    picks = draw_caption_indices(
        [3] * 3000, torch.Generator().manual_seed(0), 3000, torch.arange(3000)
    )
    counts = np.bincount(picks, minlength=3)
    assert counts.min() > 900  # each of 3 captions about 1000 times


def test_captioned_folder_yields_item_indices_and_captions(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, value in [("a.png", 0), ("b.png", 255), ("c.png", 128)]:
        Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(folder / name)
    path = write_lines(tmp_path / "c.jsonl", [
        '{"file": "b.png", "caption": "white"}', '{"file": "a.png", "captions": ["black", "dark"]}',
    ])  # fmt: skip
    with pytest.warns(UserWarning, match="1 image"):
        data = CaptionedImageFolder(str(folder), str(path), image_size=8)
    assert len(data) == 2 and data.num_classes == 0 and data.has_captions
    x, y = data[0]
    assert y.item() == 0 and data.captions(0) == ["black", "dark"] and x.max() == -1.0
    assert data.captions(1) == ["white"] and data[1][0].min() == 1.0
    bad = write_lines(tmp_path / "d.jsonl", ['{"file": "zz.png", "caption": "none"}'])
    with pytest.raises(DataError, match="captions zz.png, which is no readable image"):
        CaptionedImageFolder(str(folder), str(bad), image_size=8)
