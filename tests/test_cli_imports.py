"""Start-up: ``densevit --help``, ``--version``, ``densevit list`` and every ``densevit score``
kind run without importing PyTorch, torchvision or timm (each is run in a fresh interpreter, on
tiny files).
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

HEAVY = ("torch", "torchvision", "timm")

PROGRAM = """
import sys
from densevit.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:  # --help and --version exit from argparse
    code = exit.code
heavy = sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in %r})
print('HEAVY=' + ','.join(heavy))
print('CODE=' + str(code))
""" % (HEAVY,)


def run_cli(*args: str) -> tuple[int, list[str], str]:
    """Exit code, the heavy packages imported and the output of ``densevit ARGS`` in a new process."""
    done = subprocess.run([sys.executable, "-c", PROGRAM, *args], capture_output=True, text=True, timeout=120)
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and lines[-1].startswith("CODE="), done.stdout + done.stderr
    heavy = lines[-2].removeprefix("HEAVY=")
    return int(lines[-1].removeprefix("CODE=")), heavy.split(",") if heavy else [], done.stdout + done.stderr


def write_coco(folder):
    gt = {"images": [{"id": i, "width": 40, "height": 30} for i in (1, 2)],
          "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 8], "area": 80,
                           "iscrowd": 0, "segmentation": [[2, 3, 12, 3, 12, 11, 2, 11]]},
                          {"id": 2, "image_id": 2, "category_id": 2, "bbox": [5, 5, 20, 10], "area": 200,
                           "iscrowd": 0, "segmentation": [[5, 5, 25, 5, 25, 15, 5, 15]]}]}
    dt = [{"image_id": image, "category_id": category, "bbox": [x, y, w, h], "score": score,
           "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}
          for image, category, (x, y, w, h), score in ((1, 1, (2, 3, 10, 7), 0.9), (2, 2, (6, 5, 19, 10), 0.8),
                                                       (2, 1, (0, 0, 5, 5), 0.3))]
    (folder / "gt.json").write_text(json.dumps(gt))
    (folder / "dt.json").write_text(json.dumps(dt))
    return str(folder / "gt.json"), str(folder / "dt.json")


def write_label_maps(folder, rng):
    gt, pred = folder / "gt", folder / "pred"
    gt.mkdir()
    pred.mkdir()
    for name in ("a", "b"):
        labels = rng.integers(0, 3, (12, 16)).astype(np.uint8)
        Image.fromarray(labels).save(gt / f"{name}.png")
        noisy = np.where(rng.random(labels.shape) < 0.2, (labels + 1) % 3, labels).astype(np.uint8)
        Image.fromarray(noisy).save(pred / f"{name}.png")
    return str(gt), str(pred)


def write_classification(folder):
    (folder / "truth.csv").write_text("path,label\na.png,cat\nb.png,dog\nc.png,cat\n")
    (folder / "pred.csv").write_text("path,label,prob\na.png,cat,0.9\nb.png,cat,0.6\nc.png,cat,0.7\n")
    return str(folder / "pred.csv"), str(folder / "truth.csv")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("score_inputs")
    rng = np.random.default_rng(0)
    semantic = folder / "semantic"
    semantic.mkdir()
    medical = folder / "medical"
    medical.mkdir()
    return {"coco": write_coco(folder), "semantic": write_label_maps(semantic, rng),
            "medical": write_label_maps(medical, rng), "classification": write_classification(folder)}


def test_help_and_version_import_no_heavy_package():
    for args in (["--help"], ["--version"], ["score", "--help"], ["score", "coco", "--help"]):
        code, heavy, output = run_cli(*args)
        assert code == 0 and heavy == [], (args, heavy)
    assert "densevit 0.1.0" in run_cli("--version")[2]


@pytest.mark.parametrize("kind", ["backbones", "models"])
def test_list_imports_no_heavy_package(kind):
    code, heavy, output = run_cli("list", kind)
    assert code == 0 and heavy == [], (kind, heavy)
    assert ("swin_tiny" if kind == "backbones" else "detr_r50") in output


@pytest.mark.parametrize("kind, options", [
    ("coco", ["--iou-type", "bbox", "segm"]),
    ("semantic", ["--num-classes", "3"]),
    ("medical", ["--num-classes", "3"]),
    ("classification", []),
])
def test_score_imports_no_heavy_package(files, tmp_path, kind, options):
    out = tmp_path / "metrics.json"
    code, heavy, output = run_cli("score", kind, *files[kind], *options, "--out", str(out))
    assert code == 0, output
    assert json.loads(out.read_text())  # it really scored
    assert heavy == [], f"densevit score {kind} imported {heavy}"


def test_the_parsers_choices_are_the_evaluators():
    """``densevit score`` keeps the option choices itself (building the parser imports no evaluator)."""
    from densevit.cli import score
    from densevit.evaluation import coco, coco_gt, medical

    assert score.IOU_TYPES == coco.IOU_TYPES
    assert score.BACKENDS == coco_gt.BACKENDS
    assert score.CONVENTIONS == medical.CONVENTIONS


def test_the_package_loads_create_model_on_first_use():
    done = subprocess.run([sys.executable, "-c", "import sys, densevit; assert 'densevit.models' not in sys.modules; "
                           "from densevit import create_model, list_models; print(create_model.__module__)"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "densevit.models", done.stderr
