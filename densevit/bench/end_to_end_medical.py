"""End to end Dice + HD95: ``densevit score medical`` against a plain medpy script, as processes.

Two cases on one CT-sized label volume (``512 x 512 x 150``, 8 abdominal organs as smooth
blobs; ``quick``: ``192 x 192 x 48``), written as NIfTI files:

- ``shift_scattered``: the prediction is the ground truth shifted by 2 voxels plus a few hundred
  false-positive voxels scattered over the whole volume (as real outputs have), which spread
  every class's bounding box over the volume;
- ``shift``: the shift only.

Each tool runs as its own process on the same files (wall clock and peak RSS taken by a small
timer process that starts it):
``python -m densevit score medical GT PRED --convention transunet --num-classes 9``, and a
script that reads the files with nibabel and calls ``medpy.metric.binary.dc`` / ``hd95`` per
organ as TransUNet's ``calculate_metric_percase`` does. Their Dice and HD95 must be equal.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from densevit.bench import run_process

SHAPE = (512, 512, 150)
QUICK_SHAPE = (192, 192, 48)
SPACING = (0.78125, 0.78125, 2.5)
SHIFT = 2
FALSE_POSITIVES = 400
# Synapse's 8 organs: label, centre and semi-axes as fractions of the volume; painted in this
# order (the liver first: the gallbladder lies against it).
ORGANS = (
    (6, (0.33, 0.45, 0.58), (0.200, 0.170, 0.33)),  # liver
    (1, (0.50, 0.58, 0.50), (0.025, 0.025, 0.42)),  # aorta: a tube along z
    (2, (0.36, 0.50, 0.45), (0.040, 0.030, 0.08)),  # gallbladder
    (3, (0.72, 0.62, 0.55), (0.080, 0.070, 0.20)),  # spleen
    (4, (0.64, 0.68, 0.40), (0.050, 0.050, 0.20)),  # left kidney
    (5, (0.36, 0.68, 0.40), (0.050, 0.050, 0.20)),  # right kidney
    (7, (0.62, 0.42, 0.58), (0.120, 0.090, 0.23)),  # stomach
    (8, (0.52, 0.52, 0.38), (0.140, 0.030, 0.08)),  # pancreas
)

MEDPY_SCRIPT = '''
import json, sys
import nibabel as nib
import numpy as np
from medpy import metric

gt = np.asanyarray(nib.load(sys.argv[1]).dataobj)
pred = np.asanyarray(nib.load(sys.argv[2]).dataobj)
scores = []
for c in range(1, int(sys.argv[3])):  # TransUNet's calculate_metric_percase
    p, g = pred == c, gt == c
    if p.sum() > 0 and g.sum() > 0:
        scores.append([metric.binary.dc(p, g), metric.binary.hd95(p, g)])
    elif p.sum() > 0:
        scores.append([1.0, 0.0])
    else:
        scores.append([0.0, 0.0])
with open(sys.argv[4], "w") as f:
    json.dump(scores, f)
'''


def organ_labels(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A CT-like label volume, uint8 ``shape``: background 0 and 8 organs as wavy ellipsoids."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.uint8)
    for label, centre, axes in ORGANS:
        c = [f * n for f, n in zip(centre, shape)]
        a = [max(f * n, 2.0) for f, n in zip(axes, shape)]
        box = tuple(slice(max(int(ci - 1.2 * ai), 0), min(int(ci + 1.2 * ai) + 1, n)) for ci, ai, n in zip(c, a, shape))
        x, y, z = np.ogrid[box]
        u, v, w = (x - c[0]) / a[0], (y - c[1]) / a[1], (z - c[2]) / a[2]
        phase = rng.uniform(0, 2 * np.pi, 3)
        wave = 0.12 * np.sin(3 * u + phase[0]) * np.cos(4 * v + phase[1]) * np.cos(2 * w + phase[2])
        labels[box][u * u + v * v + w * w < (1 + wave) ** 2] = label
    return labels


def prediction(gt: np.ndarray, scattered: int, seed: int = 1) -> np.ndarray:
    """``gt`` shifted by ``SHIFT`` voxels along the first axis, plus ``scattered`` random organ voxels."""
    pred = np.zeros_like(gt)
    pred[SHIFT:] = gt[:-SHIFT]
    rng = np.random.default_rng(seed)
    where = tuple(rng.integers(0, n, scattered) for n in gt.shape)
    pred[where] = rng.integers(1, len(ORGANS) + 1, scattered)
    return pred


def write_case(folder: Path, gt: np.ndarray, pred: np.ndarray) -> tuple[Path, Path]:
    """``folder/gt/case0001.nii.gz`` and ``folder/pred/case0001.nii.gz`` (uint8, spacing ``SPACING``)."""
    import nibabel as nib

    paths = []
    for kind, volume in (("gt", gt), ("pred", pred)):
        path = folder / kind / "case0001.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(volume, np.diag([*SPACING, 1.0])), str(path))
        paths.append(path)
    return paths[0], paths[1]


def densevit_scores(out: Path, num_classes: int) -> list[list[float]]:
    """``[dice, hd95]`` per organ from ``densevit score medical --out``'s JSON."""
    rows = json.loads(out.read_text())["cases"]
    return [[row["dice"], row["hd95"]] for row in sorted(rows, key=lambda row: int(row["class"]))][:num_classes - 1]


def score_case(folder: Path, gt_path: Path, pred_path: Path) -> dict:
    """Both tools on one case: their times, peak RSS, the ratio medpy / densevit, and the scores."""
    num_classes = len(ORGANS) + 1
    ours = folder / "densevit.json"
    densevit = run_process([sys.executable, "-m", "densevit", "score", "medical", str(gt_path.parent),
                            str(pred_path.parent), "--convention", "transunet", "--num-classes", str(num_classes),
                            "--out", str(ours)], folder / "densevit.log")
    script, theirs = folder / "medpy_score.py", folder / "medpy.json"
    script.write_text(MEDPY_SCRIPT)
    medpy = run_process([sys.executable, str(script), str(gt_path), str(pred_path), str(num_classes), str(theirs)],
                        folder / "medpy.log")
    mine, reference = densevit_scores(ours, num_classes), json.loads(theirs.read_text())
    if mine != reference:
        raise RuntimeError(f"{folder.name}: densevit {mine} != medpy {reference}")
    return {"densevit": densevit, "medpy": medpy, "ratio": round(medpy["seconds"] / densevit["seconds"], 2),
            "scores": mine}


def run_medical_end_to_end(workdir: Path, quick: bool) -> dict:
    """Generate both cases under ``workdir`` and time both tools on each.

    Returns:
        ``{"shape", "spacing", "cases": {name: {"densevit": {"seconds", "peak_rss_mb"}, "medpy":
        {...}, "ratio", "scores"}}}``; ``ratio`` is medpy's seconds over densevit's. Raises
        ``RuntimeError`` when medpy is missing, a tool fails, or the scores differ.
    """
    try:
        import medpy  # noqa: F401 - only checked here; the script imports it
    except ImportError:
        raise RuntimeError("the medpy comparison needs medpy (pip install medpy)") from None
    shape = QUICK_SHAPE if quick else SHAPE
    gt = organ_labels(shape)
    cases = {}
    for name, scattered in (("shift_scattered", FALSE_POSITIVES), ("shift", 0)):
        folder = Path(workdir) / name
        gt_path, pred_path = write_case(folder, gt, prediction(gt, scattered))
        cases[name] = score_case(folder, gt_path, pred_path)
    return {"shape": list(shape), "spacing": list(SPACING), "cases": cases}


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps(run_medical_end_to_end(Path(folder), quick="--quick" in sys.argv), indent=1))
