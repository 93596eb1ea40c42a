"""Surface voxels and distances (KD-tree, torch) against the distance-transform computation they replace.

The reference below is what ``densevit.evaluation.medical`` computed before (and what MONAI and
medpy compute): surfaces by one cross-shaped binary erosion, distances read off
``distance_transform_edt`` of the other surface's complement, per class on boolean masks.
"""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from densevit.evaluation.medical import MedicalEvaluator
from densevit.evaluation.surface import label_surfaces, mask_surface, surface_distances

# Spacings whose products and sums of squares are exact in float64: every distance is bit-identical.
EXACT_SPACINGS = [None, (1.0, 1.0, 1.0), (0.5, 0.75, 2.5), (3.0, 3.0, 3.0), (0.78125, 0.78125, 5.0)]
# Others: identical except where two voxels of the other surface are exactly equally near and
# their sums of squares round differently (an ulp apart); distance_transform_edt's choice between
# them depends on its sweep order, which no nearest-neighbour search reproduces.
ROUNDED_SPACINGS = [(0.7, 0.7, 2.5), (0.7, 0.7, 0.7), (0.83, 0.77, 1.3), tuple(float(np.float32(s)) for s in (0.7, 0.7, 3.0))]


def reference_surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def reference_distances(pred: np.ndarray, gt: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """The distance-transform computation: pred -> gt and gt -> pred, surface voxels in C order."""
    ps, gs = reference_surface(pred), reference_surface(gt)
    return (ndimage.distance_transform_edt(~gs, sampling=spacing)[ps],
            ndimage.distance_transform_edt(~ps, sampling=spacing)[gs])


def reference_scores(pred: np.ndarray, gt: np.ndarray, num_classes: int, convention: str, spacing):
    """The former MedicalEvaluator's (dice, hd95, note) per class, on whole-volume masks."""
    out = []
    for c in range(1, num_classes):
        p, g = pred == c, gt == c
        ps, gs = int(p.sum()), int(g.sum())
        dice = 2.0 * int((p & g).sum()) / (ps + gs) if ps + gs else float("nan")
        if convention == "transunet":
            if ps and gs:
                out.append((dice, float(np.percentile(np.hstack(reference_distances(p, g, None)), 95)), ""))
            else:
                out.append((1.0, 0.0, "empty ground truth") if ps else (0.0, 0.0, "empty prediction"))
        elif not gs:
            out.append((float("nan"), float("nan"), "empty ground truth"))
        elif not ps:
            out.append((dice, float("nan"), "empty prediction"))
        else:
            d_pg, d_gp = reference_distances(p, g, spacing)
            out.append((dice, float(max(np.percentile(d_pg, 95), np.percentile(d_gp, 95))), ""))
    return out


def random_labels(rng, shape, num_classes: int) -> np.ndarray:
    """Blobs of labels 1..num_classes-1 (some may be missing) with a few stray voxels."""
    labels = np.zeros(shape, dtype=np.uint8)
    for c in range(1, num_classes):
        seeds = rng.random(shape) < rng.uniform(0.0, 0.03)
        labels[ndimage.binary_dilation(seeds, iterations=int(rng.integers(0, 3)))] = c
    return labels


def perturbed(rng, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """A prediction: ``gt`` shifted by up to 2 voxels, with noise and stray voxels of random labels,
    and now and then a class missed."""
    pred = np.roll(gt, tuple(int(s) for s in rng.integers(-2, 3, gt.ndim)), axis=tuple(range(gt.ndim)))
    noise = rng.random(gt.shape) < 0.02
    pred[noise] = rng.integers(0, num_classes, int(noise.sum()))
    if rng.random() < 0.3:
        pred[pred == rng.integers(1, num_classes)] = 0
    return pred


def random_case(rng, ndim: int, num_classes: int = 4):
    shape = tuple(int(s) for s in rng.integers(1 if ndim == 3 else 2, 18 if ndim == 3 else 48, ndim))
    gt = random_labels(rng, shape, num_classes)
    return perturbed(rng, gt, num_classes), gt


def pairs(rng, ndim: int, count: int):
    """``count`` (pred, gt) boolean mask pairs, both non-empty, many touching the volume border."""
    found = []
    while len(found) < count:
        pred, gt = random_case(rng, ndim, 2)
        if pred.any() and gt.any():
            found.append((pred == 1, gt == 1))
    return found


def ours(pred: np.ndarray, gt: np.ndarray, spacing, device=None):
    return surface_distances(mask_surface(pred), mask_surface(gt), spacing, device)


@pytest.mark.parametrize("ndim", [2, 3])
def test_label_surfaces_are_the_erosion_surfaces_in_c_or_fortran_order(ndim):
    rng = np.random.default_rng(10 + ndim)
    for _ in range(40):
        _, labels = random_case(rng, ndim, 5)
        for layout in (labels, np.asfortranarray(labels), labels.T.copy().T, labels[..., ::-1][..., ::-1]):
            found = label_surfaces(layout, 5)
            assert found[0].shape == (0, ndim)
            for c in range(1, 5):
                expected = np.argwhere(reference_surface(labels == c))
                if layout.flags.f_contiguous and not layout.flags.c_contiguous:  # Fortran memory order
                    expected = expected[np.lexsort(expected.T)]
                np.testing.assert_array_equal(found[c], expected.reshape(-1, ndim))


@pytest.mark.parametrize("spacing", EXACT_SPACINGS)
def test_distances_are_bit_identical_to_the_distance_transform(spacing):
    rng = np.random.default_rng(EXACT_SPACINGS.index(spacing))
    for ndim in (2, 3):
        step = None if spacing is None else spacing[:ndim]
        for pred, gt in pairs(rng, ndim, 60):
            found, expected = ours(pred, gt, step), reference_distances(pred, gt, step)
            assert found[0].dtype == np.float64
            assert np.array_equal(found[0], expected[0]) and np.array_equal(found[1], expected[1])


@pytest.mark.parametrize("spacing", ROUNDED_SPACINGS)
def test_distances_with_a_rounded_spacing_differ_by_an_ulp_at_exact_ties_only(spacing):
    rng = np.random.default_rng(7)
    differing = total = 0
    for pred, gt in pairs(rng, 3, 40):
        p, g = mask_surface(pred), mask_surface(gt)
        for found, expected, a, b in zip(ours(pred, gt, spacing), reference_distances(pred, gt, spacing),
                                         (p, g), (g, p)):
            np.testing.assert_array_max_ulp(found, expected, maxulp=1)
            rows = np.flatnonzero(found != expected)
            if rows.size:  # a tie: another voxel of the other surface is exactly as near
                exact = cdist(a[rows] * spacing, b * spacing)
                assert (np.sort(exact, axis=1)[:, 1] - exact.min(axis=1) < 1e-9).all()
            differing += rows.size
            total += found.size
    assert differing <= total // 100


def test_edge_cases_single_voxels_full_volumes_and_thin_axes():
    one = np.zeros((5, 6, 7), dtype=bool)
    one[2, 3, 4] = True
    full = np.ones((5, 6, 7), dtype=bool)
    corner = np.zeros((5, 6, 7), dtype=bool)
    corner[0, 0, 0] = True
    thin = np.zeros((1, 6, 7), dtype=bool)
    thin[0, 1:4, 2:6] = True
    line = np.zeros((9, 1), dtype=bool)
    line[3:7] = True
    cases = [(one, one), (one, full), (full, corner), (corner, one), (thin, thin[:, ::-1].copy()),
             (line, line[::-1].copy())]
    for pred, gt in cases:
        for spacing in (None, (0.5,) * pred.ndim, (0.5, 1.25, 0.375)[:pred.ndim]):
            found, expected = ours(pred, gt, spacing), reference_distances(pred, gt, spacing)
            assert np.array_equal(found[0], expected[0]) and np.array_equal(found[1], expected[1])


@pytest.mark.parametrize("convention", ["standard", "transunet"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_evaluator_equals_the_former_distance_transform_scores(convention, ndim):
    """Many random multi-class cases, empty classes on either side included: every number identical."""
    rng = np.random.default_rng(100 + ndim)
    evaluator = MedicalEvaluator(4, convention=convention)
    kinds = set()
    for k in range(40):
        pred, gt = random_case(rng, ndim)
        spacing = EXACT_SPACINGS[k % len(EXACT_SPACINGS)]
        spacing = None if spacing is None else spacing[:ndim]
        rows = evaluator.process(pred if k % 2 else np.asfortranarray(pred), gt, spacing=spacing)
        for row, (dice, hd95, note) in zip(rows, reference_scores(pred, gt, 4, convention, spacing)):
            assert row["dice"] == dice or (math.isnan(row["dice"]) and math.isnan(dice))
            assert row["hd95"] == hd95 or (math.isnan(row["hd95"]) and math.isnan(hd95))
            assert row["note"].startswith(note)
            kinds.add(note)
    assert kinds == {"", "empty ground truth", "empty prediction"}


def test_evaluator_with_a_rounded_spacing_is_within_two_ulps():
    rng = np.random.default_rng(5)
    evaluator = MedicalEvaluator(4)
    for spacing in ROUNDED_SPACINGS * 5:
        pred, gt = random_case(rng, 3)
        rows = evaluator.process(pred, gt, spacing=spacing)
        for row, (dice, hd95, _) in zip(rows, reference_scores(pred, gt, 4, "standard", spacing)):
            assert row["dice"] == dice or (math.isnan(row["dice"]) and math.isnan(dice))
            if not math.isnan(hd95):
                np.testing.assert_array_max_ulp(row["hd95"], hd95, maxulp=2)


def test_scattered_false_positives_give_the_same_numbers():
    """Stray voxels over the whole volume: the case where bounding boxes no longer help."""
    rng = np.random.default_rng(3)
    gt = np.zeros((40, 48, 24), dtype=np.uint8)
    gt[5:20, 10:30, 4:15] = 1
    gt[22:35, 8:20, 10:20] = 2
    pred = np.roll(gt, 2, axis=0)
    where = tuple(rng.integers(0, n, 60) for n in gt.shape)
    pred[where] = rng.integers(1, 3, 60)
    for convention in ("standard", "transunet"):
        rows = MedicalEvaluator(3, convention).process(pred, gt, spacing=(0.75, 0.75, 2.5))
        expected = reference_scores(pred, gt, 3, convention, (0.75, 0.75, 2.5))
        assert [(row["dice"], row["hd95"]) for row in rows] == [(d, h) for d, h, _ in expected]


def devices() -> list:
    """The torch devices to try: the CPU (the same code path), and CUDA where there is one."""
    torch = pytest.importorskip("torch")
    return ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("device", devices())
def test_torch_search_equals_the_kd_tree(device):
    """The device path (chunked float64 torch.cdist): the same neighbours' distances."""
    import torch

    rng = np.random.default_rng(11)
    for spacing in (None, (0.5, 0.75, 2.5)):
        for pred, gt in pairs(rng, 3, 15):
            found, expected = ours(pred, gt, spacing, device=device), ours(pred, gt, spacing)
            assert np.array_equal(found[0], expected[0]) and np.array_equal(found[1], expected[1])
    pred, gt = random_case(rng, 3)
    rows = MedicalEvaluator(4, "transunet", device=device).process(torch.from_numpy(pred).to(device),
                                                                    torch.from_numpy(gt).to(device))
    assert rows == MedicalEvaluator(4, "transunet").process(pred, gt)


@pytest.mark.parametrize("device", devices())
def test_torch_search_in_chunks(monkeypatch, device):
    from densevit.evaluation import surface

    rng = np.random.default_rng(12)
    pred, gt = pairs(rng, 3, 1)[0]
    whole = ours(pred, gt, (0.5, 0.75, 2.5), device=device)
    monkeypatch.setattr(surface, "TORCH_CHUNK_ELEMENTS", 7)  # one row per chunk
    chunked = ours(pred, gt, (0.5, 0.75, 2.5), device=device)
    assert np.array_equal(whole[0], chunked[0]) and np.array_equal(whole[1], chunked[1])


def test_medpy_gives_the_same_transunet_numbers():
    binary = pytest.importorskip("medpy.metric.binary")
    rng = np.random.default_rng(21)
    evaluator = MedicalEvaluator(4, convention="transunet")
    compared = 0
    for _ in range(25):
        pred, gt = random_case(rng, 3)
        for c, row in enumerate(evaluator.process(pred, gt), start=1):
            p, g = pred == c, gt == c
            if p.sum() and g.sum():
                assert (row["dice"], row["hd95"]) == (binary.dc(p, g), binary.hd95(p, g))
                compared += 1
    assert compared > 30


def test_importing_the_scorer_does_not_import_torch():
    code = "import sys, densevit.evaluation.medical; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_benchmark_volumes_score_like_the_reference():
    """``densevit.bench.end_to_end_medical``'s CT-like case, small: every organ there, same numbers."""
    from densevit.bench.end_to_end_medical import ORGANS, organ_labels, prediction

    gt = organ_labels((96, 96, 24))
    pred = prediction(gt, 40)
    assert set(np.unique(gt)) == set(range(len(ORGANS) + 1))
    for convention in ("standard", "transunet"):
        rows = MedicalEvaluator(len(ORGANS) + 1, convention).process(np.asfortranarray(pred), gt, spacing=(0.78125,) * 2 + (2.5,))
        expected = reference_scores(pred, gt, len(ORGANS) + 1, convention, (0.78125, 0.78125, 2.5))
        assert [(row["dice"], row["hd95"]) for row in rows] == [(d, h) for d, h, _ in expected]
