"""Detection on malformed COCO data, through the CLI in-process: every kind of bad file or record
ends in one error line that names the file, the record and the field, exit code 2 and no
traceback; ``data.bad_annotations: drop`` leaves bad records out with one warning line that
counts them and names the first few."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from densevit.cli import main
from densevit.data.coco import CocoDetection
from densevit.data.det_transforms import val_transforms
from densevit.data.shapes import generate_shapes
from densevit.demos import demo_config_path
from densevit.errors import SuspiciousInputWarning, UserInputError

ONE_STEP = ("train.iters=1", "train.batch_size=2", "train.final_eval=skip", "train.eval_every=0",
            "train.checkpoint_every=0", "train.progress=false", "train.tensorboard=false",
            "train.plot_curves=false", "train.num_workers=0")
EVERY_IMAGE = "train.batch_size=8"  # the one step reads all 8 training images


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, {"train": 8, "val": 4}, image_size=64, seed=0)
    return root


@pytest.fixture
def data(shapes, tmp_path) -> Path:
    """A fresh copy of the valid set to corrupt."""
    root = tmp_path / "data"
    shutil.copytree(shapes, root)
    return root


def data_overrides(root: Path) -> list[str]:
    return [f"data.train_images={root / 'images' / 'train'}", f"data.train_annotations={root / 'train.json'}",
            f"data.val_images={root / 'images' / 'val'}", f"data.val_annotations={root / 'val.json'}"]


@pytest.fixture
def cli(capsys, tmp_path):
    """``cli(command, root, *overrides, *extra args) -> (exit code, stderr)`` on the detection demo
    config pointed at ``root`` (train and evaluate), one CPU step."""
    runs = []

    def run(command: str, root: Path, *overrides: str, args: tuple[str, ...] = ()) -> tuple[int, str]:
        runs.append(command)
        argv = [command, str(demo_config_path("detect"))]
        for item in (*data_overrides(root), *ONE_STEP, *overrides):
            argv += ["--set", item]
        if command == "train":
            argv += ["--out", str(tmp_path / f"run{len(runs)}")]
        capsys.readouterr()
        rc = main([*argv, "--device", "cpu", *args])
        return rc, capsys.readouterr().err

    return run


def error_line(rc: int, err: str, *names: object) -> str:
    """The one error line of a failed run (exit code 2, no traceback); it names each of ``names``."""
    assert rc == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0], err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


def edit(root: Path, split: str, change: Callable[[dict[str, Any]], Any]) -> Any:
    """Apply ``change`` to ``root/<split>.json`` in place; returns what ``change`` returns."""
    path = root / f"{split}.json"
    coco = json.loads(path.read_text())
    result = change(coco)
    path.write_text(json.dumps(coco))  # NaN is written as NaN, which Python's json reads back
    return result


def annotation(coco: dict[str, Any], k: int, **changes: Any) -> str:
    """Change annotation ``k``; the record as messages name it."""
    ann = coco["annotations"][k]
    ann.update(changes)
    return f"annotations[{k}] (annotation id {ann['id']}, image id {ann['image_id']})"


def set_box(k: int, box: list[float]) -> Callable[[dict[str, Any]], str]:
    return lambda coco: annotation(coco, k, bbox=box)


# (case, split, change -> record named, field named)
BAD_RECORDS = [
    ("image_id not in images", lambda c: annotation(c, 0, image_id=999), "image_id 999 is not in 'images'"),
    ("duplicate annotation id", lambda c: annotation(c, 1, id=c["annotations"][0]["id"]), "'id': duplicate annotation id"),
    ("NaN in bbox", set_box(0, [float("nan"), 5.0, 10.0, 10.0]), "'bbox' must be 4 finite numbers"),
    ("infinite bbox", set_box(2, [5.0, 5.0, float("inf"), 10.0]), "'bbox' must be 4 finite numbers"),
    ("negative width", set_box(0, [5.0, 5.0, -3.0, 10.0]), "'bbox' [5.0, 5.0, -3.0, 10.0] has a negative width"),
    ("zero height", set_box(0, [5.0, 5.0, 3.0, 0.0]), "'bbox' [5.0, 5.0, 3.0, 0.0] has a width or height that is not positive"),
    ("box outside the image", set_box(0, [100.0, 100.0, 10.0, 10.0]), "'bbox' [100.0, 100.0, 10.0, 10.0] lies outside its 64x64"),
    ("box on the edge: nothing left after clipping", set_box(0, [64.0, 10.0, 5.0, 5.0]), "nothing left after clipping"),
    ("category not in categories", lambda c: annotation(c, 0, category_id=42), "category_id 42 is not in 'categories'"),
    ("iscrowd not 0/1", lambda c: annotation(c, 0, iscrowd=2), "'iscrowd' must be 0 or 1, got 2"),
    ("bbox missing", lambda c: annotation(c, 0) + ("" if c["annotations"][0].pop("bbox") else ""), "missing key 'bbox'"),
]


@pytest.mark.parametrize(("change", "field"), [case[1:] for case in BAD_RECORDS], ids=[case[0] for case in BAD_RECORDS])
def test_a_bad_training_annotation_is_one_error_line(cli, data, change, field):
    record = edit(data, "train", change)
    error_line(*cli("train", data), "train.json", record, field)


def test_a_bad_validation_annotation_is_one_error_line_before_training(cli, data):
    record = edit(data, "val", set_box(1, [float("nan"), 1.0, 2.0, 3.0]))
    error_line(*cli("train", data), "val.json", record, "'bbox'")


def test_the_old_name_error_of_the_policy_still_raises(cli, data):
    record = edit(data, "train", lambda c: annotation(c, 0, image_id=999))
    error_line(*cli("train", data, "data.bad_annotations=error"), "train.json", record, "image_id")


def test_a_raise_counts_the_other_bad_records(cli, data):
    edit(data, "train", lambda c: [annotation(c, k, category_id=42) for k in (0, 3, 5)])
    line = error_line(*cli("train", data), "train.json", "annotations[0] ", "category_id 42")
    assert "and 2 more bad records" in line


# (case, change to the parsed file, what the line names); problems of the file as a whole
BAD_FILES = [
    ("duplicate image id", lambda c: c["images"][1].update(id=c["images"][0]["id"]),
     ("images[1]", "'id': duplicate image id 1")),
    ("duplicate category id", lambda c: c["categories"][2].update(id=1), ("categories[2]", "'id': duplicate category id 1")),
    ("image id not an integer", lambda c: c["images"][3].update(id="four"), ("images[3]", "'id'")),
    ("annotations list missing", lambda c: c.pop("annotations"), ("missing key 'annotations'",)),
    ("no images", lambda c: c.update(images=[], annotations=[]), ("'images' is empty",)),
]


@pytest.mark.parametrize(("change", "names"), [case[1:] for case in BAD_FILES], ids=[case[0] for case in BAD_FILES])
def test_a_bad_annotation_file_is_one_error_line_whatever_the_policy(cli, data, change, names):
    edit(data, "train", change)
    error_line(*cli("train", data, "data.bad_annotations=drop"), "train.json", *names)


@pytest.mark.parametrize("policy", ["raise", "drop"])
@pytest.mark.parametrize(("text", "why"), [("{\"images\": [,]}", "malformed JSON"), (None, "malformed JSON"),
                                           ("", "malformed JSON"), ("[1, 2]", "expected a COCO object")],
                         ids=["malformed", "truncated", "empty", "a list"])
def test_json_that_does_not_parse_is_one_error_line(cli, data, text, why, policy):
    path = data / "train.json"
    path.write_text(path.read_text()[:300] if text is None else text)
    error_line(*cli("train", data, f"data.bad_annotations={policy}"), path, why)


def test_a_missing_annotation_file_is_one_error_line(cli, data):
    (data / "train.json").unlink()
    error_line(*cli("train", data), data / "train.json", "not found")


def test_a_missing_image_file_is_reported_when_the_set_opens(cli, data):
    (data / "images" / "train" / "000003.png").unlink()
    error_line(*cli("train", data), "train.json", "images[2] (image id 3)", "'file_name'",
               data / "images" / "train" / "000003.png", "not found")


def test_an_empty_image_file_is_reported_when_the_set_opens(cli, data):
    (data / "images" / "train" / "000006.png").write_bytes(b"")
    error_line(*cli("train", data), "train.json", "images[5] (image id 6)", "'file_name'", "000006.png", "0 bytes")


def test_bad_image_height_and_width_in_the_file(cli, data):
    edit(data, "train", lambda c: c["images"][4].update(height=0))
    error_line(*cli("train", data), "train.json", "images[4] (image id 5)", "'height' and 'width'")


def corrupt_every_training_image(root: Path, how: str) -> None:
    for path in sorted((root / "images" / "train").glob("*.png")):
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2] if how == "truncated" else b"this is not a picture" * 20)


@pytest.mark.parametrize(("how", "why"), [("truncated", "truncated"), ("garbage", "cannot identify image file")])
def test_a_corrupt_image_met_while_loading_is_one_error_line(cli, data, how, why):
    corrupt_every_training_image(data, how)
    line = error_line(*cli("train", data, EVERY_IMAGE), "cannot read image", why)
    assert str(data / "images" / "train") in line and ".png" in line


def test_a_corrupt_image_met_in_a_loader_worker_is_one_error_line(cli, data):
    corrupt_every_training_image(data, "truncated")
    line = error_line(*cli("train", data, EVERY_IMAGE, "train.num_workers=2"), "cannot read image", "truncated")
    assert str(data / "images" / "train") in line


def test_a_picture_of_another_size_than_the_file_says_names_both_sizes(cli, data):
    edit(data, "train", lambda c: [image.update(width=80) for image in c["images"]])
    line = error_line(*cli("train", data, EVERY_IMAGE), "64x64", "80x64")
    assert str(data / "images" / "train") in line and line.count(".png") == 1  # the picture, named once


def test_more_categories_than_the_model_has_classes_is_one_error_line(cli, data):
    # three categories (circle, square, triangle), two classes
    error_line(*cli("train", data, "model.num_classes=2"), "train.json", "3 categories", "model.num_classes")


def test_more_categories_than_classes_is_refused_by_the_dataset(data):
    with pytest.raises(UserInputError, match=r"train.json: 'categories' lists 3 categories, more than the "
                                             r"model's 2 classes \(model.num_classes\)"):
        CocoDetection(data / "images" / "train", data / "train.json", val_transforms(64, 64), num_classes=2)
    assert len(CocoDetection(data / "images" / "train", data / "train.json", val_transforms(64, 64), num_classes=3)) == 8


def test_an_annotation_of_a_category_the_model_lacks_is_a_bad_record(data):
    record = edit(data, "train", lambda c: annotation(c, 0, category_id=3))
    with pytest.raises(UserInputError, match=rf"{record[:11]}.*category_id 3 is not among the model's classes"):
        CocoDetection(data / "images" / "train", data / "train.json", val_transforms(64, 64), category_ids=[1, 2])


# ----------------------------------------------------------------------------- drop


def test_drop_trains_on_and_reports_the_bad_records_in_one_warning_line(cli, data):
    records = edit(data, "train", lambda c: [annotation(c, 0, image_id=999), annotation(c, 2, bbox=[1, 2, float("nan"), 4]),
                                             annotation(c, 4, iscrowd=7)])
    (data / "images" / "train" / "000008.png").unlink()
    rc, err = cli("train", data, "data.bad_annotations=drop")
    assert rc == 0, err
    assert "Traceback" not in err and ": error: " not in err
    warnings = [line for line in err.splitlines() if "bad_annotations" in line]
    assert len(warnings) == 1, err
    line = warnings[0]
    assert line.startswith("densevit train: warning: ") and "train.json" in line
    assert "dropped 4 bad records (3 annotations, 1 image)" in line
    # the first three by position, then an ellipsis for the rest
    for record, field in zip(records, ("image_id 999", "'bbox'", "'iscrowd'")):
        assert record in line and field in line
    assert line.endswith("; ...") and "images[7]" not in line


def test_drop_leaves_out_the_bad_records_and_keeps_the_rest(data):
    coco = json.loads((data / "train.json").read_text())
    first_image = coco["annotations"][0]["image_id"]
    before = sum(a["image_id"] == first_image for a in coco["annotations"])
    edit(data, "train", lambda c: annotation(c, 0, bbox=[500, 500, 5, 5]))
    (data / "images" / "train" / "000002.png").unlink()
    with pytest.warns(SuspiciousInputWarning, match=r"dropped 2 bad records \(1 annotation, 1 image\)"):
        dataset = CocoDetection(data / "images" / "train", data / "train.json", val_transforms(64, 64),
                                bad_annotations="drop")
    assert [record.image_id for record in dataset.records] == [1, 3, 4, 5, 6, 7, 8]
    _, target = dataset[0]
    assert int(target["image_id"]) == first_image and len(target["labels"]) == before - 1


def test_drop_with_nothing_usable_left_is_an_error(cli, data):
    for path in (data / "images" / "train").glob("*.png"):
        path.unlink()
    error_line(*cli("train", data, "data.bad_annotations=drop"), "train.json", "no usable image left")


# ----------------------------------------------------------------------------- RT-DETR, evaluate, predict

RTDETR = ("model.name=rtdetr_tiny", "data.input_size=64")


def test_rtdetr_pipeline_meets_a_bad_box_with_one_error_line(cli, data):
    record = edit(data, "train", set_box(0, [float("nan"), 5.0, 10.0, 10.0]))
    error_line(*cli("train", data, *RTDETR), "train.json", record, "'bbox'")


def test_rtdetr_pipeline_trains_with_drop(cli, data):
    record = edit(data, "train", set_box(0, [100.0, 100.0, 10.0, 10.0]))
    rc, err = cli("train", data, *RTDETR, "data.bad_annotations=drop")
    assert rc == 0, err
    assert record in err and "dropped 1 bad record (1 annotation)" in err


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory) -> tuple[Path, Path]:
    """A checkpoint after one step on a copy of the set; (data folder, checkpoint)."""
    root = tmp_path_factory.mktemp("trained")
    shutil.copytree(shapes, root / "data")
    argv = ["train", str(demo_config_path("detect"))]
    for item in (*data_overrides(root / "data"), *ONE_STEP):
        argv += ["--set", item]
    assert main([*argv, "--out", str(root / "run"), "--device", "cpu"]) == 0
    return root / "data", root / "run" / "last.pth"


def test_evaluate_meets_a_bad_validation_file_with_one_error_line(cli, trained, data):
    _, checkpoint = trained
    rc, err = cli("evaluate", data, args=("--checkpoint", str(checkpoint)))
    assert rc == 0, err  # the checkpoint scores the valid set
    record = edit(data, "val", lambda c: annotation(c, 2, image_id=12345))
    error_line(*cli("evaluate", data, args=("--checkpoint", str(checkpoint))), "val.json", record, "image_id 12345")


def test_predict_meets_a_broken_annotation_file_of_its_config_with_one_error_line(trained, capsys, tmp_path):
    root, checkpoint = trained
    picture = root / "images" / "val" / "000009.png"
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "a"), "--device", "cpu",
                 "--no-pictures", str(picture)]) == 0
    saved = (root / "val.json").read_text()
    try:
        (root / "val.json").write_text(saved[:100])
        capsys.readouterr()
        rc = main(["predict", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "b"), "--device", "cpu",
                   "--no-pictures", str(picture)])
        error_line(rc, capsys.readouterr().err, root / "val.json", "malformed JSON")
    finally:
        (root / "val.json").write_text(saved)


# ----------------------------------------------------------------------------- config ranges

BAD_VALUES = [
    ("data.hflip=1.5", "data.hflip: expected a probability in [0, 1], got 1.5"),
    ("data.train_scales=[128,0]", "data.train_scales: expected positive integers"),
    ("data.max_size=0", "data.max_size: expected a positive integer, got 0"),
    ("data.val_size=-8", "data.val_size: expected a positive integer"),
    ("data.input_size=0", "data.input_size: expected a positive integer"),
    ("data.crop_size=[600,384]", "data.crop_size: expected [min, max] with min <= max, got [600, 384]"),
    ("data.crop_resize_scales=[]", "data.crop_resize_scales: expected at least one size"),
    ("data.batch_scales=[480,0]", "data.batch_scales: expected positive integers"),
    ("data.size_divisor=0", "data.size_divisor: expected 1 or more, got 0"),
    ("data.max_detections=0", "data.max_detections: expected 1 or more, got 0"),
    ("data.augment_stop_epoch=-2", "data.augment_stop_epoch: expected -1 or more, got -2"),
    ("loss.weight_giou=-1", "loss.weight_giou: expected 0 or more"),
    ("loss.cost_bbox=-0.5", "loss.cost_bbox: expected 0 or more"),
    ("loss.eos_coef=0", "loss.eos_coef: expected a value in (0, 1]"),
    ("loss.eos_coef=1.5", "loss.eos_coef: expected a value in (0, 1]"),
    ("loss.focal_alpha=1.25", "loss.focal_alpha: expected a probability in [0, 1]"),
    ("loss.focal_gamma=-1", "loss.focal_gamma: expected 0 or more"),
    ("loss.vfl_alpha=-0.1", "loss.vfl_alpha: expected a probability in [0, 1]"),
    ("data.bad_annotations=ignore", "data.bad_annotations: expected one of 'raise', 'drop', 'error'"),
]


@pytest.mark.parametrize(("override", "message"), BAD_VALUES, ids=[case[0] for case in BAD_VALUES])
def test_a_detection_config_value_out_of_range_is_one_error_line(capsys, tmp_path, override, message):
    capsys.readouterr()
    rc = main(["train", str(demo_config_path("detect")), "--set", override, "--set", "train.iters=1",
               "--out", str(tmp_path / "run"), "--device", "cpu"])
    error_line(rc, capsys.readouterr().err, "detect.yaml", message)


def test_the_range_checks_pass_the_defaults_and_the_edges():
    from densevit.detection.config import DetectionDataConfig, DetectionLossConfig

    DetectionDataConfig().check()
    DetectionLossConfig().check()
    DetectionDataConfig(hflip=0.0, crop_size=(64, 64), size_divisor=1, max_detections=1, augment_stop_epoch=-1,
                        batch_scales=[64], bad_annotations="error").check()
    DetectionLossConfig(eos_coef=1.0, focal_alpha=0.0, focal_gamma=0.0, vfl_alpha=1.0, weight_class=0.0).check()


def test_drop_in_the_validation_file_scores_what_was_kept(cli, data):
    edit(data, "val", lambda c: annotation(c, 0, bbox=[1, 2, float("nan"), 4]))
    (data / "images" / "val" / sorted(p.name for p in (data / "images" / "val").iterdir())[-1]).unlink()
    rc, err = cli("train", data, "data.bad_annotations=drop", "train.final_eval=full")
    assert rc == 0, err
    [line] = [line for line in err.splitlines() if "bad_annotations" in line]
    assert "val.json" in line and "dropped 2 bad records (1 annotation, 1 image)" in line
