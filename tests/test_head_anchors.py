"""AnchorGrid: geometry and order of anchors, head-output layout, serialisation, comparison, validation."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from grids import small_grid

from stereodistill.errors import InputError
from stereodistill.head.anchors import AnchorGrid
from stereodistill.params import read_params_yaml

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def tiny_params() -> dict:
    """4 x 4 cells of 0.5 m, two classes, two rotations."""
    return {
        "point_cloud_range": [0.0, -1.0, -3.0, 2.0, 1.0, 1.0],
        "bev_cell_size": 0.5,
        "rotations": [0.0, math.pi / 2],
        "classes": [
            {
                "name": "Car",
                "size": [3.9, 1.6, 1.56],
                "bottom_z": -1.65,
                "matched_iou": 0.6,
                "unmatched_iou": 0.45,
            },
            {
                "name": "Pedestrian",
                "size": [0.8, 0.6, 1.73],
                "bottom_z": -1.5,
                "matched_iou": 0.5,
                "unmatched_iou": 0.35,
            },
        ],
    }


def liga_params() -> dict:
    return {
        "point_cloud_range": [2.0, -30.4, -3.0, 59.6, 30.4, 1.0],
        "bev_cell_size": 0.2,
        "rotations": [0.0, math.pi / 2],
        "classes": [
            {
                "name": "Car",
                "size": [3.9, 1.6, 1.56],
                "bottom_z": -1.78,
                "matched_iou": 0.6,
                "unmatched_iou": 0.45,
            },
            {
                "name": "Pedestrian",
                "size": [0.8, 0.6, 1.73],
                "bottom_z": -0.6,
                "matched_iou": 0.5,
                "unmatched_iou": 0.35,
            },
            {
                "name": "Cyclist",
                "size": [1.76, 0.6, 1.73],
                "bottom_z": -0.6,
                "matched_iou": 0.5,
                "unmatched_iou": 0.35,
            },
        ],
    }


def test_tiny_grid_sizes_and_specific_anchors():
    g = AnchorGrid.from_params(tiny_params())
    assert (g.nx, g.ny, g.num_classes, g.num_rotations, g.anchors_per_cell) == (4, 4, 2, 2, 4)
    assert g.num_anchors == 64
    anchors = g.anchors()
    assert anchors.shape == (64, 7) and anchors.dtype == torch.float32
    # index = ((iy * nx + ix) * C + c) * R + r
    assert g.anchor_index(1, 2, 1, 0) == ((1 * 4 + 2) * 2 + 1) * 2 + 0 == 26
    # cell (iy=1, ix=2): x = 0 + 2.5 * 0.5, y = -1 + 1.5 * 0.5; Pedestrian z = -1.5 + 1.73 / 2
    torch.testing.assert_close(anchors[26], torch.tensor([1.25, -0.25, -0.635, 0.8, 0.6, 1.73, 0.0]))
    # last anchor: cell (3, 3), Pedestrian, rotation pi/2
    torch.testing.assert_close(anchors[63], torch.tensor([1.75, 0.75, -0.635, 0.8, 0.6, 1.73, math.pi / 2]))
    # anchor 1: cell (0, 0), Car, rotation pi/2; z = -1.65 + 0.78
    torch.testing.assert_close(anchors[1], torch.tensor([0.25, -0.75, -0.87, 3.9, 1.6, 1.56, math.pi / 2]))
    # x varies fastest across cells, then y
    assert anchors[g.anchor_index(0, 1, 0, 0), 0] == pytest.approx(0.75)
    assert anchors[g.anchor_index(1, 0, 0, 0), 1] == pytest.approx(-0.25)


def test_anchor_class_ids_follow_the_order():
    g = AnchorGrid.from_params(tiny_params())
    ids = g.anchor_class_ids()
    assert ids.shape == (64,) and ids.dtype == torch.long
    assert ids[:8].tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    sizes = torch.tensor([c.size for c in g.classes])
    torch.testing.assert_close(g.anchors()[:, 3:6], sizes[ids])


def test_params_yaml_grid_and_liga_grid_sizes():
    g = AnchorGrid.from_params(read_params_yaml(PARAMS.read_text())["grid"], PARAMS)
    assert (g.nx, g.ny) == (round(38.4 / g.bev_cell_size), round(38.4 / g.bev_cell_size))
    liga = AnchorGrid.from_params(liga_params())
    assert (liga.nx, liga.ny, liga.num_anchors) == (288, 304, 525312)  # docs/METHOD.md §2.1
    anchors = liga.anchors()
    assert anchors[0, 0].item() == pytest.approx(2.1)
    assert anchors[-1, 1].item() == pytest.approx(30.3)


def test_anchors_device_and_dtype():
    g = AnchorGrid.from_params(tiny_params())
    a64 = g.anchors(dtype=torch.float64)
    assert a64.dtype == torch.float64
    torch.testing.assert_close(a64.float(), g.anchors())


def test_flatten_dense_matches_anchor_index():
    g = AnchorGrid.from_params(tiny_params())
    b, k = 2, 3
    # value encodes (batch, anchor-in-cell a, value k, iy, ix) in channel a * K + k
    dense = torch.zeros(b, g.anchors_per_cell * k, g.ny, g.nx)
    for bi in range(b):
        for a in range(g.anchors_per_cell):
            for kk in range(k):
                for iy in range(g.ny):
                    for ix in range(g.nx):
                        dense[bi, a * k + kk, iy, ix] = bi * 10000 + a * 1000 + kk * 100 + iy * 10 + ix
    flat = g.flatten_dense(dense, k)
    assert flat.shape == (b, g.num_anchors, k)
    for iy, ix, c, r, kk in [(0, 0, 0, 0, 0), (1, 2, 1, 0, 2), (3, 1, 0, 1, 1), (3, 3, 1, 1, 2)]:
        a = c * g.num_rotations + r
        assert flat[1, g.anchor_index(iy, ix, c, r), kk].item() == 10000 + a * 1000 + kk * 100 + iy * 10 + ix
    assert torch.equal(g.unflatten_dense(flat), dense)


def test_flatten_dense_rejects_wrong_shape():
    g = AnchorGrid.from_params(tiny_params())
    with pytest.raises(ValueError, match=r"\(B, 4\*7, 4, 4\)"):
        g.flatten_dense(torch.zeros(1, 4 * 7, 4, 5), 7)
    with pytest.raises(ValueError, match="per-anchor"):
        g.unflatten_dense(torch.zeros(1, 63, 7))


def test_to_dict_from_dict_round_trip_through_json():
    g = AnchorGrid.from_params(liga_params())
    d = json.loads(json.dumps(g.to_dict()))
    assert d == liga_params()
    back = AnchorGrid.from_dict(d)
    assert back == g and back.diff(g) is None
    assert torch.equal(back.anchors(), g.anchors())


def test_grid_is_frozen():
    g = AnchorGrid.from_params(tiny_params())
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.bev_cell_size = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.classes[0].bottom_z = 0.0  # type: ignore[misc]


def _changed(path: list, value) -> AnchorGrid:
    p = copy.deepcopy(liga_params())
    target = p
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return AnchorGrid.from_params(p)


def test_diff_names_first_differing_field_with_both_values():
    g = AnchorGrid.from_params(liga_params())
    other = _changed(["classes", 1, "size"], [0.8, 0.6, 1.7])
    assert g.diff(other) == "grid.classes[1].size: [0.8, 0.6, 1.73] != [0.8, 0.6, 1.7]"
    assert _changed(["bev_cell_size"], 0.4).diff(g) == "grid.bev_cell_size: 0.4 != 0.2"
    assert g.diff(_changed(["classes", 2, "name"], "Bike")) == "grid.classes[2].name: 'Cyclist' != 'Bike'"
    assert g.diff(_changed(["classes", 0, "bottom_z"], -1.65)) == "grid.classes[0].bottom_z: -1.78 != -1.65"
    assert (
        g.diff(_changed(["rotations"], [0.0, 1.57])) == f"grid.rotations: [0.0, {math.pi / 2}] != [0.0, 1.57]"
    )
    assert g.diff(_changed(["rotations"], [0.0])) == f"grid.rotations: [0.0, {math.pi / 2}] != [0.0]"
    fewer = copy.deepcopy(liga_params())
    fewer["classes"] = fewer["classes"][:1]
    assert (
        g.diff(AnchorGrid.from_params(fewer)) == "grid.classes: ['Car', 'Pedestrian', 'Cyclist'] != ['Car']"
    )


def test_diff_tolerates_float32_rounding_only():
    g = AnchorGrid.from_params(liga_params())
    as_f32 = float(torch.tensor(math.pi / 2, dtype=torch.float32))
    assert g.diff(_changed(["rotations"], [0.0, as_f32])) is None
    assert g.diff(_changed(["classes", 0, "matched_iou"], 0.6 + 1e-5)) is not None


def test_check_compatible_raises_input_error_naming_field_and_source():
    g = AnchorGrid.from_params(liga_params())
    stored = AnchorGrid.from_dict(
        _changed(["classes", 1, "size"], [0.8, 0.6, 1.7]).to_dict(), source="teacher.pt"
    )
    g.check_compatible(AnchorGrid.from_dict(g.to_dict()), what="checkpoint teacher.pt")
    with pytest.raises(InputError) as err:
        g.check_compatible(stored, what="the anchor grid of checkpoint teacher.pt")
    message = str(err.value)
    assert message.startswith("teacher.pt: the anchor grid of checkpoint teacher.pt does not match")
    assert "grid.classes[1].size: [0.8, 0.6, 1.73] != [0.8, 0.6, 1.7]" in message


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (["point_cloud_range"], [2.0, -30.4, -3.0, 2.0, 30.4, 1.0], "grid.point_cloud_range: x_max"),
        (["point_cloud_range"], [2.0, -30.4, 1.0, 59.6, 30.4, -3.0], "grid.point_cloud_range: z_max"),
        (["point_cloud_range"], [2.0, -30.4, -3.0, 59.6, 30.4], "grid.point_cloud_range: expected 6 numbers"),
        (
            ["point_cloud_range"],
            [2.0, -30.4, -3.0, "far", 30.4, 1.0],
            r"grid.point_cloud_range\[3\]: expected a number",
        ),
        (["bev_cell_size"], 0.0, "grid.bev_cell_size: must be positive"),
        (["bev_cell_size"], 0.25, "grid.bev_cell_size: 0.25 does not divide the x extent"),
        (["bev_cell_size"], True, "grid.bev_cell_size: expected a number"),
        (["bev_cell_size"], float("nan"), "grid.bev_cell_size: expected a finite number"),
        (["rotations"], [], "grid.rotations: needs at least one"),
        (["classes"], [], "grid.classes: needs at least one"),
        (["classes", 1, "size"], [0.8, 0.0, 1.73], r"grid.classes\[1\].size: expected three positive"),
        (["classes", 1, "size"], [0.8, 1.73], r"grid.classes\[1\].size: expected 3 numbers"),
        (["classes", 2, "unmatched_iou"], 0.6, r"grid.classes\[2\]: need 0 < unmatched_iou <= matched_iou"),
        (["classes", 2, "unmatched_iou"], 0.0, r"grid.classes\[2\]: need 0 < unmatched_iou"),
        (
            ["classes", 0, "matched_iou"],
            1.2,
            r"grid.classes\[0\]: need 0 < unmatched_iou <= matched_iou <= 1",
        ),
        (["classes", 2, "name"], "Car", r"grid.classes\[2\].name: duplicate class name 'Car'"),
        (["classes", 2, "name"], "", r"grid.classes\[2\].name: expected a non-empty string"),
    ],
)
def test_bad_params_name_the_field(path, value, expected):
    with pytest.raises(InputError, match=expected):
        _changed(path, value)


def test_missing_and_unknown_keys():
    p = liga_params()
    del p["classes"][1]["bottom_z"]
    with pytest.raises(InputError, match=r"grid.classes\[1\]: missing key 'bottom_z'"):
        AnchorGrid.from_params(p)
    p = liga_params()
    p["bev_cellsize"] = 0.2
    with pytest.raises(InputError, match="grid: unknown key 'bev_cellsize'"):
        AnchorGrid.from_params(p)
    with pytest.raises(InputError, match="grid: expected a mapping"):
        AnchorGrid.from_params([1, 2])  # type: ignore[arg-type]


def test_error_names_the_source_file():
    p = liga_params()
    p["bev_cell_size"] = -1
    with pytest.raises(InputError) as err:
        AnchorGrid.from_params(p, source="params.yaml")
    assert str(err.value).startswith("params.yaml: grid.bev_cell_size")


def test_shared_anchors_are_built_once_per_device_and_dtype():
    g = small_grid(8.0, 4.0)
    shared = g.shared_anchors("cpu")
    assert shared is g.shared_anchors(torch.device("cpu"))
    assert torch.equal(shared, g.anchors()) and shared.dtype == torch.float32
    f64 = g.shared_anchors("cpu", torch.float64)
    assert f64 is not shared and torch.equal(f64, g.anchors(dtype=torch.float64))
