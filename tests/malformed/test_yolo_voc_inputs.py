"""Malformed YOLO and Pascal VOC data, through the CLI in-process (``densevit data convert``, and
``densevit train`` for the checks shared with COCO and the ``drop`` policy): each bad line, element
or file is one error line that names the file and the line or element, exit code 2; ``drop``
leaves bad lines and objects out with one warning line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from malformed_helpers import error_line, warnings_of
from PIL import Image

SIZE = 64
# (class, cx, cy, w, h) per line of each picture's label file
BOXES = {"a": ["0 0.5 0.5 0.4 0.3", "1 0.25 0.3 0.2 0.2"], "b": ["2 0.6 0.4 0.3 0.5"], "c": ["1 0.5 0.5 0.9 0.9"]}


def pictures(folder: Path, suffix: str) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stem in BOXES:
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / f"{stem}{suffix}")


@pytest.fixture
def yolo(tmp_path) -> Path:
    """A valid YOLO set (three pictures, classes a, b, c); returns its data.yaml."""
    root = tmp_path / "yolo"
    pictures(root / "images" / "train", ".png")
    (root / "labels" / "train").mkdir(parents=True)
    for stem, lines in BOXES.items():
        (root / "labels" / "train" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text("train: images/train\nval: images/train\nnames: [a, b, c]\n")
    return root / "data.yaml"


def voc_object(name: str, box: tuple, difficult: int = 0) -> str:
    corners = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    return f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>{corners}</bndbox></object>"


@pytest.fixture
def voc(tmp_path) -> Path:
    """A valid VOC folder (three pictures, split val); returns it."""
    root = tmp_path / "VOC2007"
    pictures(root / "JPEGImages", ".jpg")
    (root / "Annotations").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for stem in BOXES:
        objects = voc_object("dog", (10, 12, 40, 50)) + voc_object("cat", (5, 5, 20, 30))
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><size><width>{SIZE}</width><height>{SIZE}</height></size>{objects}</annotation>")
    (root / "ImageSets" / "Main" / "val.txt").write_text("a\nb\nc\n")
    return root


def convert(cli, layout: str, source: Path, *extra: str) -> tuple[int, str]:
    return cli("data", "convert", "--from", layout, str(source), "--split", "train" if layout == "yolo" else "val",
               "--out", str(source.parent / "out.json"), *extra)


def train(cli, tmp_path: Path, data: dict) -> tuple[int, str]:
    config = {"task": "detection", "model": {"name": "detr_tiny", "num_classes": 0},
              "data": {"train_scales": [SIZE], "max_size": SIZE, "crop": False, "val_size": SIZE, **data},
              "loss": {"classification": "sigmoid"},
              "train": {"iters": 1, "batch_size": 2, "final_eval": "skip", "eval_every": 0, "checkpoint_every": 0,
                        "progress": False, "tensorboard": False, "plot_curves": False, "precision": "fp32"}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return cli("train", str(path))


# ----------------------------------------------------------------------------- YOLO

# (case, the line written as line 2 of a.txt, what the error says)
BAD_LINES = [
    ("four numbers", "0 0.5 0.5 0.2", "expected 5 numbers 'class cx cy w h'"),
    ("six numbers", "0 0.5 0.5 0.2 0.2 0.9", "expected 5 numbers 'class cx cy w h'"),
    ("a word", "0 0.5 half 0.2 0.2", "expected 5 numbers 'class cx cy w h'"),
    ("class beyond nc", "3 0.5 0.5 0.2 0.2", "class 3 is not an integer in [0, 3)"),
    ("negative class", "-1 0.5 0.5 0.2 0.2", "class -1 is not an integer in [0, 3)"),
    ("fractional class", "1.5 0.5 0.5 0.2 0.2", "class 1.5 is not an integer in [0, 3)"),
    ("pixel coordinates", "0 32 32 10 10", "coordinates must be normalised to [0, 1]"),
    ("NaN", "0 nan 0.5 0.2 0.2", "coordinates must be finite numbers"),
]


@pytest.mark.parametrize(("line", "why"), [case[1:] for case in BAD_LINES], ids=[case[0] for case in BAD_LINES])
def test_a_bad_yolo_line_is_one_error_line_naming_the_file_and_line(cli, yolo, line, why):
    label = yolo.parent / "labels" / "train" / "a.txt"
    label.write_text(f"{BOXES['a'][0]}\n{line}\n")
    error_line(*convert(cli, "yolo", yolo), f"{label}: line 2: ", why)
    assert not (yolo.parent / "out.json").exists()


def test_coordinates_within_the_tolerance_are_kept(cli, yolo):
    (yolo.parent / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 1.0005 0.3\n")
    rc, err = convert(cli, "yolo", yolo)
    assert rc == 0, err


def test_a_yolo_box_of_zero_width_is_caught_by_the_shared_checks_naming_the_line(cli, yolo, tmp_path):
    label = yolo.parent / "labels" / "train" / "b.txt"
    label.write_text("2 0.6 0.4 0.0 0.5\n")
    error_line(*train(cli, tmp_path, {"format": "yolo", "root": str(yolo)}), str(yolo), f"{label} line 1",
               "has a width or height that is not positive")


def test_drop_leaves_bad_yolo_lines_out_with_one_warning(cli, yolo, tmp_path):
    labels = yolo.parent / "labels" / "train"
    (labels / "a.txt").write_text(f"{BOXES['a'][0]}\n7 0.5 0.5 0.2 0.2\n")
    (labels / "c.txt").write_text("1 0.5 0.5 0.2\n")
    # no validation set (val_split ""): the training set's warning alone
    rc, err = train(cli, tmp_path, {"format": "yolo", "root": str(yolo), "bad_annotations": "drop", "val_split": ""})
    assert rc == 0, err
    [line] = warnings_of(err)
    assert "dropped 2 bad records" in line and f"{labels / 'a.txt'}: line 2: class 7" in line
    assert f"{labels / 'c.txt'}: line 1: expected 5 numbers" in line


def test_raise_counts_the_other_bad_yolo_lines(cli, yolo):
    (yolo.parent / "labels" / "train" / "a.txt").write_text("7 0.5 0.5 0.2 0.2\n9 0.5 0.5 0.2 0.2\n")
    line = error_line(*convert(cli, "yolo", yolo), "a.txt: line 1: class 7")
    assert "and 1 more bad records" in line


# (case, data.yaml text, what the error says)
BAD_YAML = [
    ("not YAML", "train: [images/train\n", "malformed YAML"),
    ("a list", "- images/train\n", "expected a mapping"),
    ("no names", "train: images/train\n", "'names': expected a list of class names"),
    ("nc disagrees", "train: images/train\nnc: 4\nnames: [a, b, c]\n", "'nc' is 4 but 'names' lists 3 classes"),
    ("names with a gap", "train: images/train\nnames: {0: a, 2: c}\n", "expected class indices 0..1"),
    ("no such split", "val: images/train\nnames: [a]\n", "no 'train' entry (the splits it names: val)"),
    ("split not a folder", "train: images/nothing\nnames: [a]\n", "is neither a folder nor a .txt list"),
]


@pytest.mark.parametrize(("text", "why"), [case[1:] for case in BAD_YAML], ids=[case[0] for case in BAD_YAML])
def test_a_bad_data_yaml_is_one_error_line(cli, yolo, text, why):
    yolo.write_text(text)
    error_line(*convert(cli, "yolo", yolo, "--bad-annotations", "drop"), yolo, why)


def test_a_missing_data_yaml_is_one_error_line(cli, tmp_path):
    error_line(*convert(cli, "yolo", tmp_path / "data.yaml"), tmp_path / "data.yaml", "file not found")


def test_an_image_list_naming_a_missing_picture(cli, yolo):
    (yolo.parent / "train.txt").write_text("images/train/a.png\nimages/train/gone.png\n")
    yolo.write_text("train: train.txt\nnames: [a, b, c]\n")
    error_line(*convert(cli, "yolo", yolo), yolo.parent / "images" / "train" / "gone.png", "image file not found")


# ----------------------------------------------------------------------------- VOC


def write_xml(voc: Path, stem: str, text: str) -> Path:
    path = voc / "Annotations" / f"{stem}.xml"
    path.write_text(text)
    return path


# (case, the XML of b.xml, what the error names)
BAD_XML = [
    ("does not parse", "<annotation><object><name>dog</name>", ("XML that does not parse",)),
    ("no bndbox", f"<annotation>{voc_object('dog', (1, 1, 9, 9))}<object><name>cat</name></object></annotation>",
     ("<object> 2 (cat): missing <bndbox>",)),
    ("a corner missing", ("<annotation><object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax>"
                          "</bndbox></object></annotation>"), ("<object> 1 (cat): missing <bndbox><ymax>",)),
    ("non-numeric xmin", f"<annotation>{voc_object('dog', ('left', 1, 9, 9))}</annotation>",
     ("<object> 1 (dog): <xmin> must be a number", "'left'")),
    ("unknown class", f"<annotation>{voc_object('dragon', (1, 1, 9, 9))}</annotation>",
     ("<object> 1: <name> 'dragon' is not one of the 20 classes (aeroplane, bicycle",)),
    ("no name", "<annotation><object><bndbox/></object></annotation>", ("<object> 1: missing <name>",)),
    ("xmax before xmin", f"<annotation>{voc_object('dog', (20, 1, 5, 9))}</annotation>",
     ("<object> 1 (dog): <xmax> 5 is less than <xmin> 20",)),
    ("difficult not 0/1", f"<annotation>{voc_object('dog', (1, 1, 9, 9), difficult=2)}</annotation>",
     ("<difficult> must be 0 or 1",)),
]


@pytest.mark.parametrize(("text", "names"), [case[1:] for case in BAD_XML], ids=[case[0] for case in BAD_XML])
def test_a_bad_voc_file_is_one_error_line_naming_the_file_and_element(cli, voc, text, names):
    xml = write_xml(voc, "b", text)
    error_line(*convert(cli, "voc", voc), xml, *names)


def test_a_missing_xml_file_is_one_error_line(cli, voc):
    (voc / "Annotations" / "c.xml").unlink()
    error_line(*convert(cli, "voc", voc), voc / "Annotations" / "c.xml", "file not found")


def test_a_missing_split_list_names_the_lists_there(cli, voc):
    error_line(*cli("data", "convert", "--from", "voc", str(voc), "--split", "test", "--out", str(voc / "o.json")),
               voc / "ImageSets" / "Main" / "test.txt", "file not found (the split lists there: val)")


def test_a_voc_box_outside_its_image_is_caught_by_the_shared_checks_naming_the_element(cli, voc, tmp_path):
    xml = write_xml(voc, "a", f"<annotation><size><width>{SIZE}</width><height>{SIZE}</height></size>"
                              f"{voc_object('dog', (100, 100, 120, 120))}</annotation>")
    data = {"format": "voc", "root": str(voc), "train_split": "val"}
    error_line(*train(cli, tmp_path, data), f"{xml} <object> 1", "lies outside its 64x64 image")


def test_drop_leaves_bad_voc_objects_and_files_out_with_one_warning(cli, voc, tmp_path):
    write_xml(voc, "a", "<annotation><object>")
    write_xml(voc, "b", f"<annotation>{voc_object('dog', (1, 1, 9, 9))}{voc_object('unicorn', (1, 1, 9, 9))}</annotation>")
    rc, err = train(cli, tmp_path, {"format": "voc", "root": str(voc), "train_split": "val", "val_split": "",
                                    "bad_annotations": "drop"})
    assert rc == 0, err
    [line] = warnings_of(err)
    assert "val.txt: data.bad_annotations=drop: dropped 2 bad records" in line
    assert "a.xml: XML that does not parse" in line and "b.xml: <object> 2: <name> 'unicorn'" in line


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(("data", "names"), [
    ({"format": "yolo", "root": "data.yaml", "train_annotations": "x.json"},
     ("data.train_annotations: used by data.format coco, not yolo", "data.root names the data.yaml")),
    ({"format": "voc", "root": "VOC2007", "val_images": "imgs"}, ("data.val_images: used by data.format coco, not voc",)),
    ({"root": "data.yaml", "train_annotations": "x.json"}, ("data.root: used by data.format yolo and voc, not coco",)),
    ({"format": "yaml"}, ("data.format",)),
    ({"format": "voc", "root": "VOC2007", "train_split": ""}, ("data.train_split",)),
], ids=["yolo with a COCO file", "voc with an images folder", "coco with a root", "unknown format", "no train split"])
def test_a_config_that_mixes_layouts_is_refused_when_loaded(cli, tmp_path, data, names):
    error_line(*train(cli, tmp_path, data), tmp_path / "config.yaml", *names)


def test_a_yolo_config_without_root_is_one_error_line(cli, tmp_path):
    error_line(*train(cli, tmp_path, {"format": "yolo"}), "data.root is empty")
