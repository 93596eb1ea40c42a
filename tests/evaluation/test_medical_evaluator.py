"""MedicalEvaluator and surface distances against brute force (all pairwise surface distances)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from densevit.errors import UserInputError
from densevit.evaluation.medical import MedicalEvaluator, format_table
from densevit.evaluation.surface import mask_surface, surface_distances


def brute_surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels by definition: foreground with a 6- (4-) neighbour outside the mask or volume."""
    padded = np.pad(mask, 1)
    inner = np.ones_like(mask)
    for axis in range(mask.ndim):
        for step in (-1, 1):
            inner &= np.roll(padded, step, axis=axis)[tuple(slice(1, -1) for _ in range(mask.ndim))]
    return np.argwhere(mask & ~inner)


def brute_distances(pred, gt, spacing):
    """Every pairwise distance between the two surfaces, minimised each way."""
    spacing = np.ones(pred.ndim) if spacing is None else np.asarray(spacing)
    d = cdist(brute_surface(pred) * spacing, brute_surface(gt) * spacing)
    return d.min(1), d.min(0)


def random_masks(rng, shape, touch_border=False):
    masks = []
    for _ in range(2):
        m = ndimage.binary_dilation(rng.random(shape) < 0.04, iterations=int(rng.integers(0, 3)))
        if touch_border:
            m[(0,) * len(shape)] = True
        masks.append(m)
    return masks


def distances(pred, gt, spacing=None):
    return surface_distances(mask_surface(pred), mask_surface(gt), spacing)


@pytest.mark.parametrize("ndim", [2, 3])
def test_distances_equal_brute_force(ndim):
    rng = np.random.default_rng(ndim)
    checked = 0
    for k in range(60):
        shape = tuple(int(s) for s in rng.integers(4, 16 if ndim == 3 else 40, ndim))
        pred, gt = random_masks(rng, shape, touch_border=k % 3 == 0)
        if not (pred.any() and gt.any()):
            continue
        spacing = rng.uniform(0.3, 3.0, ndim)
        found, brute = distances(pred, gt, spacing), brute_distances(pred, gt, spacing)
        np.testing.assert_allclose(found[0], brute[0], rtol=1e-12)
        np.testing.assert_allclose(found[1], brute[1], rtol=1e-12)
        checked += 1
    assert checked > 40


def test_object_touching_the_volume_border():
    """Erosion sees background outside the volume: voxels on the border are surface voxels."""
    gt = np.zeros((9, 9), dtype=bool)
    gt[2:7, 2:7] = True
    pred = gt.copy()
    pred[4, 7:9] = True  # reaches the volume border
    np.testing.assert_array_equal(mask_surface(pred), brute_surface(pred))
    np.testing.assert_allclose(np.sort(distances(pred, gt)[0]), np.sort(brute_distances(pred, gt, None)[0]))


def two_organ_case(rng, shape=(14, 18, 16)):
    gt = np.zeros(shape, dtype=np.int64)
    gt[2:9, 3:12, 4:10] = 1
    gt[9:13, 5:15, 2:7] = 2
    pred = gt.copy()
    pred[ndimage.binary_dilation(gt == 1) & (rng.random(shape) < 0.5)] = 1
    pred[(gt == 2) & (rng.random(shape) < 0.3)] = 0
    pred[0, 0, 0] = 2  # a stray voxel far away: HD95 must see it in the 5% tail or not
    return pred, gt


def test_standard_convention_matches_brute_force_monai_definition():
    rng = np.random.default_rng(7)
    pred, gt = two_organ_case(rng)
    spacing = (2.5, 0.7, 0.9)
    evaluator = MedicalEvaluator(3, class_names=["bg", "liver", "kidney"])
    rows = evaluator.process(pred, gt, spacing=spacing, case_id="case1")
    for row, c in zip(rows, (1, 2)):
        p, g = pred == c, gt == c
        d_pg, d_gp = brute_distances(p, g, spacing)
        # MONAI: max of the two directed 95th percentiles, linear interpolation.
        assert row["hd95"] == pytest.approx(max(np.percentile(d_pg, 95), np.percentile(d_gp, 95)), rel=1e-12)
        assert row["dice"] == pytest.approx(2 * np.sum(p & g) / (p.sum() + g.sum()), rel=1e-15)
        assert row["case"] == "case1" and row["note"] == ""
    assert [row["class"] for row in rows] == ["liver", "kidney"]


def test_transunet_convention_matches_brute_force_medpy():
    rng = np.random.default_rng(8)
    pred, gt = two_organ_case(rng)
    evaluator = MedicalEvaluator(3, convention="transunet")
    rows = evaluator.process(pred, gt, spacing=(2.5, 0.7, 0.9))  # medpy in TransUNet: no spacing
    for row, c in zip(rows, (1, 2)):
        p, g = pred == c, gt == c
        pooled = np.hstack(brute_distances(p, g, None))
        assert row["hd95"] == pytest.approx(np.percentile(pooled, 95), rel=1e-12)
        assert row["dice"] == pytest.approx(2 * np.sum(p & g) / (p.sum() + g.sum()), rel=1e-15)
    assert evaluator.unit == "voxels"


def test_the_two_conventions_differ_where_they_should():
    """A 10x10 square (36 surface pixels) and the same square plus a 3-pixel stray line 10 away.

    Directed prediction->truth: 36 zeros and 3 tens, the 95th percentile (rank 36.1 of 0..38)
    is 10; truth->prediction is all zeros; MONAI takes the max: 10. medpy pools the 75 values
    (72 zeros): rank 70.3 is 0. With spacing 2 mm, the standard number doubles, TransUNet's not.
    """
    gt = np.zeros((30, 30), dtype=np.int64)
    gt[5:15, 5:15] = 1
    pred = gt.copy()
    pred[24, 5:8] = 1
    standard = MedicalEvaluator(2).process(pred, gt, spacing=(2.0, 2.0))[0]
    transunet = MedicalEvaluator(2, convention="transunet").process(pred, gt, spacing=(2.0, 2.0))[0]
    assert standard["hd95"] == pytest.approx(20.0)
    assert transunet["hd95"] == 0.0
    assert standard["dice"] == transunet["dice"] == pytest.approx(200 / 203)


def test_empty_masks_in_both_conventions():
    gt = np.zeros((6, 6, 6), dtype=np.int64)
    pred = np.zeros_like(gt)
    gt[1:3, 1:3, 1:3] = 1  # class 1: empty prediction
    pred[3:5, 3:5, 3:5] = 2  # class 2: empty ground truth; class 3: empty in both
    standard = MedicalEvaluator(4).process(pred, gt)
    assert standard[0]["dice"] == 0.0 and math.isnan(standard[0]["hd95"])
    assert "empty prediction" in standard[0]["note"]
    assert math.isnan(standard[1]["dice"]) and math.isnan(standard[1]["hd95"])
    assert standard[1]["note"] == "empty ground truth"
    assert math.isnan(standard[2]["dice"]) and standard[2]["note"] == "empty ground truth and prediction"
    transunet = MedicalEvaluator(4, convention="transunet").process(pred, gt)
    assert [(r["dice"], r["hd95"]) for r in transunet] == [(0.0, 0.0), (1.0, 0.0), (0.0, 0.0)]


def test_means_leave_out_nan_in_standard_and_count_everything_in_transunet():
    gt = np.zeros((2, 8, 8), dtype=np.int64)
    gt[:, 2:5, 2:5] = 1
    perfect = gt.copy()
    empty = np.zeros_like(gt)
    for convention, expected_dice, expected_hd in (("standard", 1.0, 0.0), ("transunet", 0.5, 0.0)):
        evaluator = MedicalEvaluator(2, convention=convention)
        evaluator.process(perfect, gt, case_id="a")
        evaluator.process(empty, gt, case_id="b")
        evaluator.process(empty, gt, case_id="a")  # seen again: counted once
        result = evaluator.compute()
        assert len(result["cases"]) == 2
        entry = result["per_class"][0]
        assert entry["hd95"] == expected_hd
        if convention == "standard":
            # Dice of the empty prediction is a real 0; its HD95 is NaN and left out.
            assert entry["dice"] == 0.5 and entry["cases_hd95"] == 1
        else:
            assert entry["dice"] == expected_dice and entry["cases_hd95"] == 2
        assert result["mean_dice"] == entry["dice"] == result[f"dice/{entry['class']}"]
    table = format_table(result)
    assert "Dice %" in table and "   50.00" in table


def test_bad_volumes_are_errors():
    evaluator = MedicalEvaluator(3)
    with pytest.raises(UserInputError, match="label 3 outside 0..2"):
        evaluator.process(np.full((3, 3, 3), 3), np.zeros((3, 3, 3), dtype=int))
    with pytest.raises(UserInputError, match="non-integer"):
        evaluator.process(np.full((3, 3, 3), 0.5), np.zeros((3, 3, 3), dtype=int))
    with pytest.raises(UserInputError, match="differ"):
        evaluator.process(np.zeros((3, 3, 4), dtype=int), np.zeros((3, 3, 3), dtype=int))
    with pytest.raises(UserInputError, match="spacing"):
        evaluator.process(np.zeros((3, 3, 3), dtype=int), np.zeros((3, 3, 3), dtype=int), spacing=(1, 1))


def test_real_ct_labels_equal_the_distance_transform(real_data):
    """41 organs of a real CT label volume against a perturbed copy: HD95 == distance-transform HD95."""
    nib = pytest.importorskip("nibabel")
    path = next((real_data / "ct_totalseg").glob("*seg*.nii*"), None) or sorted(
        (real_data / "ct_totalseg").glob("*.nii*"))[-1]
    image = nib.load(str(path))
    gt = np.asanyarray(image.dataobj).astype(np.int64)
    spacing = image.header.get_zooms()[:3]
    pred = ndimage.grey_dilation(gt, size=(3, 1, 1))  # a prediction that is off by about one voxel
    evaluator = MedicalEvaluator(int(gt.max()) + 1)
    rows = evaluator.process(pred, gt, spacing=spacing)
    scored = [(c, row) for c, row in enumerate(rows, start=1) if not math.isnan(row["hd95"])]
    assert len(scored) >= 10
    for c, row in scored:
        p, g = pred == c, gt == c
        ps, gs = p & ~ndimage.binary_erosion(p), g & ~ndimage.binary_erosion(g)
        d_pg = ndimage.distance_transform_edt(~gs, sampling=spacing)[ps]
        d_gp = ndimage.distance_transform_edt(~ps, sampling=spacing)[gs]
        assert row["hd95"] == max(np.percentile(d_pg, 95), np.percentile(d_gp, 95))


@pytest.mark.parametrize("convention", ["standard", "transunet"])
def test_results_are_plain_python_numbers(convention):
    """Rows go into JSON logs and weights-only checkpoints, which refuse numpy scalars."""
    gt = np.zeros((8, 8, 8), dtype=np.int64)
    gt[2:5, 2:5, 2:5] = 1
    pred = gt.copy()
    pred[3, 3, 5] = 1
    evaluator = MedicalEvaluator(2, convention)
    evaluator.process(pred, gt, spacing=(1.0, 1.0, 2.0))
    result = evaluator.compute()
    values = [v for row in result["cases"] for v in row.values()] + [result["mean_dice"], result["mean_hd95"]]
    assert all(type(v) in (str, float) for v in values)
