"""Captioned images for text-to-image training: an image folder with a captions file.

Two caption formats:
- JSON Lines, one object per line: {"file": "<path relative to the folder>", "caption": "..."}
  or {"file": ..., "captions": ["...", "..."]} (several lines may name one file; they add up);
- COCO's captions JSON (`captions_train2017.json`): "images" [{"id", "file_name"}] and
  "annotations" [{"image_id", "caption"}].

A captioned dataset yields (x, item index) and gives each item's captions by `captions(index)`;
the training loop draws one of them per step from its seeded per-step generator
(`draw_caption_indices`), so the caption an image gets is reproducible from the seed and
independent of ranks and loader workers. A malformed or missing entry is one DataError naming
the file and line.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset

from speed.data.image_folder import ImageFolderDataset
from speed.errors import DataError


def _text(value, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: a caption must be a non-empty string, got {value!r}")
    return " ".join(value.split())


def read_jsonl_captions(path: Path) -> dict[str, list[str]]:
    """{file relative path: captions} from a JSON Lines captions file (blank lines skipped)."""
    captions: dict[str, list[str]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{where}: not JSON ({error.msg})") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise DataError(f'{where}: expected {{"file": ..., "caption" or "captions": ...}}')
        if ("caption" in entry) == ("captions" in entry):
            raise DataError(f'{where}: give exactly one of "caption" and "captions"')
        texts = entry["captions"] if "captions" in entry else [entry["caption"]]
        if not isinstance(texts, list) or not texts:
            raise DataError(f'{where}: "captions" must be a non-empty list of strings')
        captions.setdefault(entry["file"], []).extend(_text(t, where) for t in texts)
    return captions


def read_coco_captions(path: Path) -> dict[str, list[str]]:
    """{file_name: captions} from COCO's captions JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: not JSON ({error.msg})") from None
    if not isinstance(data, dict) or not {"images", "annotations"} <= set(data):
        raise DataError(f'{path}: a COCO captions file holds "images" and "annotations"')
    names = {}
    for number, image in enumerate(data["images"]):
        if not isinstance(image, dict) or not {"id", "file_name"} <= set(image):
            raise DataError(f'{path}: images[{number}] needs "id" and "file_name"')
        names[image["id"]] = image["file_name"]
    captions: dict[str, list[str]] = {}
    for number, note in enumerate(data["annotations"]):
        where = f"{path}: annotations[{number}]"
        if not isinstance(note, dict) or not {"image_id", "caption"} <= set(note):
            raise DataError(f'{where} needs "image_id" and "caption"')
        if note["image_id"] not in names:
            raise DataError(f"{where}: image_id {note['image_id']} is in no images entry")
        captions.setdefault(names[note["image_id"]], []).append(_text(note["caption"], where))
    return captions


def read_captions(path: str | Path) -> dict[str, list[str]]:
    """Captions by file from `path`: COCO's JSON (a .json file) or JSON Lines (.jsonl)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data.captions: no captions file at {path}")
    return read_coco_captions(path) if path.suffix == ".json" else read_jsonl_captions(path)


def draw_caption_indices(
    counts: list[int], generator: torch.Generator, size: int, positions: torch.Tensor
) -> list[int]:
    """Which caption of each item (of counts[j] captions): draws `size` uniform numbers (one per
    sample of the global batch; `positions` pick this micro-batch's, so every rank and
    micro-batch takes its own share of the same draws) and takes floor(u * count)."""
    draws = torch.rand(size, generator=generator)[positions]
    return [int(u * count) for count, u in zip(counts, draws.tolist())]


class CaptionedImageFolder(Dataset):
    """Images of a folder with their captions: x float32 [3, R, R] in [-1, 1], y the item index
    (int64); `captions(index)` lists the item's captions.

    Args:
        path: the image folder (flat or nested; a file's caption key is its path relative to it).
        captions: the captions file (.jsonl or COCO's .json; see the module docstring).
        image_size: output side in pixels (ADM center crop).
        random_flip: mirror each image left-right with probability 1/2 (off by default: a flip
            swaps "left" and "right" in a caption).
    """

    num_channels = 3
    num_classes = 0
    class_names = None
    is_latent = False
    has_captions = True

    def __init__(self, path: str, captions: str, image_size: int, random_flip: bool = False):
        self.images = ImageFolderDataset(path, image_size, random_flip, class_cond=False)
        by_file = read_captions(captions)
        root = Path(path)
        keys = [f.relative_to(root).as_posix() for f in self.images.files]
        known = set(keys)
        missing = [name for name in by_file if name not in known]
        if missing:
            raise DataError(
                f"data.captions: {captions} captions {missing[0]}, which is no readable image "
                f"under {root} ({len(missing)} such entries)"
            )
        self.items = [i for i, key in enumerate(keys) if key in by_file]
        self.texts = [by_file[keys[i]] for i in self.items]
        if not self.items:
            raise DataError(f"data.captions: {captions} captions none of the images under {root}")
        if len(self.items) < len(keys):
            warnings.warn(
                f"data: {len(keys) - len(self.items)} image(s) under {root} have no caption in "
                f"{captions} and are left out",
                stacklevel=2,
            )
        self.resolution = image_size

    def __len__(self) -> int:
        return len(self.items)

    def captions(self, index: int) -> list[str]:
        return self.texts[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, _ = self.images[self.items[index]]
        return x, torch.tensor(index, dtype=torch.int64)
