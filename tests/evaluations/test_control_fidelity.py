"""The edge IoU of a ControlNet's samples against their control edges: the formula on hand-made
maps with known values, the sample edges of drawn squares, and the command line on an inference
`.npz` that holds its control images."""

import json

import numpy as np
import pytest

from evaluations.control_fidelity import compute_control_metrics, main, sample_edges
from evaluations.metrics import edge_iou
from speed.errors import DataError


def square(side=8, top=2, left=2, size=4):
    """uint8 [side, side, 3]: a white square on black."""
    image = np.zeros((side, side, 3), np.uint8)
    image[top : top + size, left : left + size] = 255
    return image


def test_edge_iou_of_hand_made_maps():
    p = np.zeros((3, 6, 6), bool)
    t = np.zeros((3, 6, 6), bool)
    p[0, 0:4, 0:4] = True  # 16 pixels
    t[0, 2:4, 0:4] = True  # 8 of them: IoU 8 / 16
    t[0, 4:6, 0:4] = True  # 8 more outside: IoU 8 / 24
    p[1, 0, 0] = True  # disjoint: 0
    t[1, 5, 5] = True
    # image 2: both empty: 1 (nothing to follow, nothing drawn)
    np.testing.assert_allclose(edge_iou(p, t), [1 / 3, 0.0, 1.0])
    with pytest.raises(DataError, match="one shape"):
        edge_iou(p, t[:2])


def test_sample_edges_are_the_silhouette_outline_and_a_shift_costs_a_known_iou():
    ring = np.zeros((8, 8), bool)
    ring[1:7, 1:7] = True
    ring[3:5, 3:5] = False  # Sobel edges of the 4x4 square: 32 pixels on both sides of its outline
    assert np.array_equal(sample_edges(square()[None], -0.5)[0], ring)
    control = (ring[..., None] * 255).astype(np.uint8)
    samples = np.stack([square(), square(left=3)])  # followed exactly, and shifted one pixel
    result = compute_control_metrics(np.stack([control, control]), samples)
    # the shifted ring overlaps in 30 - 6 = 24 pixels of a 32 + 32 - 24 = 40 pixel union: 0.6
    assert result["edge_iou"]["value"] == pytest.approx((1.0 + 0.6) / 2)
    assert result["num_images"] == 2


def test_command_line_reads_the_controls_from_the_inference_npz(tmp_path, capsys):
    ring = sample_edges(square()[None], -0.5)[0]
    npz = tmp_path / "0000100.npz"
    np.savez(npz, arr_0=np.stack([square(), square(left=3)]),
             control=np.stack([(ring[..., None] * 255).astype(np.uint8)] * 2))  # fmt: skip
    out = tmp_path / "fidelity.json"
    assert main([str(npz), "--out", str(out)]) == 0
    assert "edge IoU: 0.8000 over 2 images" in capsys.readouterr().out
    assert json.loads(out.read_text())["edge_iou"]["value"] == pytest.approx(0.8)
    plain = tmp_path / "plain.npz"
    np.savez(plain, arr_0=np.stack([square()]))
    assert main([str(plain)]) == 2
    assert "holds no control images" in capsys.readouterr().err
