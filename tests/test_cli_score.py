"""``densevit score coco|semantic|medical``: the numbers, the tables, and one-line errors (exit 2)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from densevit.cli import main

STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def printed_stats(text: str) -> dict[str, list[float]]:
    """The ``NAME value`` lines of the COCO table, per iou type."""
    stats: dict[str, list[float]] = {}
    current = None
    for line in text.splitlines():
        if re.fullmatch(r"(bbox|segm):", line):
            current = line[:-1]
            stats[current] = []
        match = re.fullmatch(r"\s+(\w+)\s+(-?[0-9.e-]+)", line)
        if current and match and match.group(1) in STATS:
            stats[current].append(float(match.group(2)))
    return stats


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# --------------------------------------------------------------------------- coco
@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_coco_prints_the_expected_stats(real_data, capsys, tmp_path, backend, iou_type):
    folder = real_data / "coco_val2014_100"
    expected = json.loads((folder / "expected_stats.json").read_text())
    out = tmp_path / "metrics.json"
    code = main(["score", "coco", str(folder / "instances_val2014_100.json"),
                 str(folder / f"instances_val2014_fake{iou_type}100_results.json"),
                 "--iou-type", iou_type, "--backend", backend, "--per-class", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    np.testing.assert_allclose(printed_stats(text)[iou_type], expected[iou_type], rtol=0, atol=1e-12)
    written = json.loads(out.read_text())[iou_type]
    np.testing.assert_allclose([written[k] for k in STATS], expected[iou_type], rtol=0, atol=1e-12)
    assert len(written["per_class"]) == 80 and "fire hydrant" in text and "no gt" in text


def write_json(path, data):
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture
def small_gt(tmp_path):
    gt = {"images": [{"id": 1, "width": 20, "height": 10}], "categories": [{"id": 3, "name": "cat"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5], "area": 25,
                           "iscrowd": 0, "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]]}]}
    return write_json(tmp_path / "gt.json", gt)


@pytest.mark.parametrize("detections, message", [
    ("{not json", "malformed JSON"),
    ([{"image_id": 1, "category_id": 3, "score": 0.5}], "missing key 'bbox'"),
    ([{"image_id": 1, "category_id": 3, "bbox": [1, 1, -5, 5], "score": 0.5}], "negative width or height"),
    ([{"image_id": 7, "category_id": 3, "bbox": [1, 1, 5, 5], "score": 0.5}], "image_id 7 is not in the ground truth"),
    ({"image_id": 1}, "expected a list of detections"),
])
def test_coco_bad_detections(capsys, tmp_path, small_gt, detections, message):
    dt = tmp_path / "dt.json"
    dt.write_text(detections if isinstance(detections, str) else json.dumps(detections))
    assert main(["score", "coco", small_gt, str(dt)]) == 2
    line = error_line(capsys)
    assert str(dt) in line and message in line


def test_coco_bad_ground_truth_and_mask_size(capsys, tmp_path, small_gt):
    dt = write_json(tmp_path / "dt.json", [{"image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5], "score": 0.5}])
    gt = write_json(tmp_path / "bad_gt.json", {"images": [], "categories": []})
    assert main(["score", "coco", gt, dt]) == 2
    line = error_line(capsys)
    assert "bad_gt.json" in line and "missing key 'annotations'" in line
    masks = write_json(tmp_path / "masks.json", [{"image_id": 1, "category_id": 3, "score": 0.5,
                                                  "segmentation": {"size": [10, 21], "counts": "0"}}])
    assert main(["score", "coco", small_gt, masks, "--iou-type", "segm"]) == 2
    line = error_line(capsys)
    assert "masks.json" in line and "mask size [10, 21] does not match the image size [10, 20]" in line


# --------------------------------------------------------------------------- semantic
def write_png(path, array, mode=None):
    Image.fromarray(array.astype(np.uint8), mode=mode).save(path)


def test_semantic_on_real_camvid_labels(real_data, capsys, tmp_path):
    """Real CamVid label PNGs against a shifted copy; numbers checked per class by brute force."""
    src = sorted((real_data / "camvid" / "valannot").glob("*.png"))[:3]
    assert len(src) == 3
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    gts, preds = [], []
    for path in src:
        gt = np.array(Image.open(path))
        pred = np.roll(gt, 3, axis=1)
        pred[pred == 11] = 0
        write_png(gt_dir / path.name, gt)
        write_png(pred_dir / path.name, pred)
        gts.append(gt)
        preds.append(pred)
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"class{c}" for c in range(11)) + "\n")
    out = tmp_path / "m.json"
    assert main(["score", "semantic", str(gt_dir), str(pred_dir), "--num-classes", "11",
                 "--ignore-index", "11", "--class-names", str(names), "--out", str(out)]) == 0
    assert "mIoU" in capsys.readouterr().out
    result = json.loads(out.read_text())
    for c, row in enumerate(result["per_class"]):
        inter = sum(np.sum((g == c) & (p == c)) for g, p in zip(gts, preds))
        union = sum(np.sum(((g == c) | (p == c)) & (g != 11)) for g, p in zip(gts, preds))
        assert row["class"] == f"class{c}"
        if union:
            assert row["IoU"] == pytest.approx(inter / union, rel=1e-12)
        else:
            assert row["IoU"] is None  # NaN written as null


def semantic_dirs(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    write_png(gt_dir / "a.png", np.zeros((4, 5)))
    return gt_dir, pred_dir


def test_semantic_bad_inputs(capsys, tmp_path):
    gt_dir, pred_dir = semantic_dirs(tmp_path)
    args = ["score", "semantic", str(gt_dir), str(pred_dir), "--num-classes", "3"]
    assert main(args) == 2
    assert "a.png: no file of the same name in" in error_line(capsys)
    write_png(pred_dir / "a.png", np.zeros((4, 6)))
    assert main(args) == 2
    line = error_line(capsys)
    assert str(pred_dir / "a.png") in line and "does not match" in line
    write_png(pred_dir / "a.png", np.full((4, 5), 7))
    assert main(args) == 2
    line = error_line(capsys)
    assert str(pred_dir / "a.png") in line and "prediction has labels 7 outside 0..2" in line
    Image.fromarray(np.zeros((4, 5, 3), dtype=np.uint8)).save(pred_dir / "a.png")
    assert main(args) == 2
    assert "expected a single-channel label map, got a RGB picture" in error_line(capsys)
    write_png(pred_dir / "a.png", np.zeros((4, 5)))
    names = tmp_path / "names.txt"
    names.write_text("road\ncar\n")
    assert main(args + ["--class-names", str(names)]) == 2
    line = error_line(capsys)
    assert str(names) in line and "2 class names for 3 classes" in line


# --------------------------------------------------------------------------- medical
def write_nifti(path, array, zooms=(1.0, 1.0, 1.0)):
    nib = pytest.importorskip("nibabel")
    image = nib.Nifti1Image(array, np.diag([*zooms, 1.0]))
    image.header.set_zooms(zooms)
    nib.save(image, str(path))


def test_medical_reads_spacing_from_the_header(capsys, tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    gt = np.zeros((12, 12, 8), dtype=np.uint8)
    gt[3:8, 3:8, 2:6] = 1
    pred = gt.copy()
    pred[9, 3:6, 3] = 1  # 3 stray voxels, 2 voxels (4 mm along axis 0) from the cube's face
    write_nifti(gt_dir / "case1.nii.gz", gt, (2.0, 1.0, 1.0))
    write_nifti(pred_dir / "case1.nii.gz", pred, (2.0, 1.0, 1.0))
    names = tmp_path / "names.txt"
    names.write_text("background\ncube\n")
    out = tmp_path / "m.json"
    assert main(["score", "medical", str(gt_dir), str(pred_dir), "--class-names", str(names),
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    row = json.loads(out.read_text())["cases"][0]
    assert row["case"] == "case1" and row["class"] == "cube" and "case1" in text
    assert row["dice"] == pytest.approx(2 * 100 / 203)
    # Brute force in mm over the 3 stray surface voxels: the directed 95th percentile of the
    # prediction's surface distances (3 of them are 4 mm, the rest 0).
    from scipy import ndimage
    from scipy.spatial.distance import cdist

    def surf(m):
        return np.argwhere(m & ~ndimage.binary_erosion(m)) * np.array([2.0, 1.0, 1.0])

    d = cdist(surf(pred.astype(bool)), surf(gt.astype(bool)))
    assert row["hd95"] == pytest.approx(max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95)))
    assert main(["score", "medical", str(gt_dir), str(pred_dir), "--convention", "transunet"]) == 0
    assert "HD95 voxels" in capsys.readouterr().out


def test_medical_bad_inputs(capsys, tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    write_nifti(gt_dir / "c.nii.gz", np.zeros((4, 4, 4), dtype=np.uint8))
    args = ["score", "medical", str(gt_dir), str(pred_dir)]
    assert main(args) == 2
    assert "c.nii.gz: no file of the same name in" in error_line(capsys)
    write_nifti(pred_dir / "c.nii.gz", np.zeros((4, 4, 5), dtype=np.uint8))
    assert main(args) == 2
    assert "shape (4, 4, 5) does not match" in error_line(capsys)
    write_nifti(pred_dir / "c.nii.gz", np.full((4, 4, 4), 0.5, dtype=np.float32))
    assert main(args + ["--num-classes", "2"]) == 2
    line = error_line(capsys)
    assert str(pred_dir / "c.nii.gz") in line and "non-integer" in line
    write_nifti(pred_dir / "c.nii.gz", np.zeros((4, 4, 4), dtype=np.uint8), (1.0, 1.0, 3.0))
    assert main(args) == 2
    assert "voxel spacing" in error_line(capsys)
    (pred_dir / "c.nii.gz").write_bytes(b"not a nifti")
    assert main(args) == 2
    assert "cannot read the NIfTI file" in error_line(capsys)
