"""YOLO and Pascal VOC layouts on real photos (voc100): the test writes both layouts from the COCO
JSON by the formats' own definitions, then checks that the readers give back the same boxes and
classes, that ``densevit data convert`` writes a file pycocotools reads with those boxes, and that
training and ``densevit evaluate`` on the three layouts of the same data give the same COCO AP."""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from pycocotools.coco import COCO

from densevit.cli import main
from densevit.data.coco_json import read_instances
from densevit.data.voc import VOC_CLASSES
from densevit.data.yolo import label_path

SUBSET = 8  # images of voc100 used for training and evaluation (the readers see all 100)


def write_voc(coco: dict, images: Path, root: Path, split: str = "val") -> list[str]:
    """``root`` as VOCdevkit/VOC2007 from a COCO dict: corners 1-based inclusive (xmin = x + 1,
    xmax = x + w + 1 for integer pixel boxes, as mmdetection reads them back); returns the class
    names in category-id order."""
    names = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
    name_of = {c["id"]: c["name"] for c in coco["categories"]}
    for folder in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for image in coco["images"]:
        stem = Path(image["file_name"]).stem
        (root / "JPEGImages" / f"{stem}.jpg").symlink_to(images / image["file_name"])
        xml = ET.Element("annotation")
        ET.SubElement(xml, "filename").text = image["file_name"]
        size = ET.SubElement(xml, "size")
        for key in ("width", "height"):
            ET.SubElement(size, key).text = str(image[key])
        ET.SubElement(size, "depth").text = "3"
        for ann in coco["annotations"]:
            if ann["image_id"] != image["id"]:
                continue
            obj = ET.SubElement(xml, "object")
            ET.SubElement(obj, "name").text = name_of[ann["category_id"]]
            ET.SubElement(obj, "difficult").text = str(ann.get("iscrowd", 0))
            box = ET.SubElement(obj, "bndbox")
            x, y, w, h = ann["bbox"]
            for key, value in zip(("xmin", "ymin", "xmax", "ymax"), (x + 1, y + 1, x + w + 1, y + h + 1)):
                ET.SubElement(box, key).text = str(int(value))
        ET.ElementTree(xml).write(root / "Annotations" / f"{stem}.xml")
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text(
        "".join(f"{Path(i['file_name']).stem}\n" for i in coco["images"]))
    return names


def write_yolo(coco: dict, images: Path, root: Path, split: str = "val") -> Path:
    """``root`` in ultralytics' layout from a COCO dict: one ``class cx cy w h`` line per box,
    normalised by the image size, class = index in category-id order; returns the data.yaml."""
    categories = sorted(c["id"] for c in coco["categories"])
    (root / "images" / split).mkdir(parents=True)
    (root / "labels" / split).mkdir(parents=True)
    for image in coco["images"]:
        (root / "images" / split / image["file_name"]).symlink_to(images / image["file_name"])
        width, height = image["width"], image["height"]
        lines = [f"{categories.index(a['category_id'])} {(a['bbox'][0] + a['bbox'][2] / 2) / width!r} "
                 f"{(a['bbox'][1] + a['bbox'][3] / 2) / height!r} {a['bbox'][2] / width!r} {a['bbox'][3] / height!r}"
                 for a in coco["annotations"] if a["image_id"] == image["id"]]
        if lines:  # an image without objects has no label file
            (root / "labels" / split / f"{Path(image['file_name']).stem}.txt").write_text("\n".join(lines) + "\n")
    names = {c["id"]: c["name"] for c in coco["categories"]}
    data_yaml = root / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({"path": ".", "train": f"images/{split}", "val": f"images/{split}",
                                         "names": {i: names[c] for i, c in enumerate(categories)}}))
    return data_yaml


def boxes_by_file(data: dict) -> dict[str, list[tuple[str, tuple[float, ...], int]]]:
    """file name -> sorted (class name, xywh box, iscrowd) of its annotations."""
    file_of = {i["id"]: Path(i["file_name"]).name for i in data["images"]}
    name_of = {c["id"]: c["name"] for c in data["categories"]}
    found: dict[str, list] = {name: [] for name in file_of.values()}
    for ann in data["annotations"]:
        found[file_of[ann["image_id"]]].append((name_of[ann["category_id"]], tuple(ann["bbox"]), int(ann.get("iscrowd", 0))))
    return {name: sorted(anns) for name, anns in found.items()}


def assert_same_boxes(read: dict, original: dict, tolerance: float) -> None:
    got, expected = boxes_by_file(read), boxes_by_file(original)
    assert got.keys() == expected.keys()
    for name in expected:
        assert [(c, crowd) for c, _, crowd in got[name]] == [(c, crowd) for c, _, crowd in expected[name]], name
        np.testing.assert_allclose([b for _, b, _ in got[name]], [b for _, b, _ in expected[name]], atol=tolerance,
                                   err_msg=name)


@pytest.fixture(scope="module")
def voc100(real_data) -> tuple[dict, Path]:
    root = real_data / "voc100"
    return json.loads((root / "annotations" / "instances.json").read_text()), root / "images"


@pytest.fixture(scope="module")
def layouts(voc100, tmp_path_factory) -> dict:
    """The voc100 set in the three layouts."""
    coco, images = voc100
    base = tmp_path_factory.mktemp("layouts")
    names = write_voc(coco, images, base / "VOC2007")
    return {"coco": coco, "images": images, "voc": base / "VOC2007", "voc_names": names,
            "yolo": write_yolo(coco, images, base / "yolo")}


def test_voc_reads_back_the_boxes_and_classes_it_was_written_with(layouts):
    read = read_instances("voc", layouts["voc"], "val", class_names=layouts["voc_names"])
    assert len(read.data["images"]) == 100 and len(read.data["annotations"]) == 273
    assert_same_boxes(read.data, layouts["coco"], tolerance=0.0)  # integer pixels: exact
    sizes = {i["file_name"]: (i["width"], i["height"]) for i in layouts["coco"]["images"]}
    assert {i["file_name"]: (i["width"], i["height"]) for i in read.data["images"]} == sizes
    # the category ids of the class list given, in its order: those of the file
    assert read.data["categories"] == [{**c, "supercategory": "none"} for c in layouts["coco"]["categories"]]
    assert read.image_dir == layouts["voc"] / "JPEGImages"


def test_voc_default_classes_are_the_twenty_of_pascal_voc(layouts):
    read = read_instances("voc", layouts["voc"], "val")
    assert [c["name"] for c in read.data["categories"]] == list(VOC_CLASSES)
    assert_same_boxes(read.data, layouts["coco"], tolerance=0.0)


def test_yolo_reads_back_the_boxes_and_classes_it_was_written_with(layouts):
    read = read_instances("yolo", layouts["yolo"], "val")
    assert len(read.data["images"]) == 100 and len(read.data["annotations"]) == 273
    assert_same_boxes(read.data, layouts["coco"], tolerance=1e-9)
    # sizes from the pictures' headers, as the COCO file has them
    sizes = {i["file_name"]: (i["width"], i["height"]) for i in layouts["coco"]["images"]}
    assert {i["file_name"]: (i["width"], i["height"]) for i in read.data["images"]} == sizes
    assert [c["id"] for c in read.data["categories"]] == sorted(c["id"] for c in layouts["coco"]["categories"])
    assert read.image_dir == layouts["yolo"].parent / "images" / "val"


def test_yolo_polygon_lines_give_their_bounding_box_and_missing_label_files_no_objects(tmp_path, voc100):
    coco, images = voc100
    one = {**coco, "images": coco["images"][:2], "annotations": []}
    data_yaml = write_yolo(one, images, tmp_path)
    first = tmp_path / "images" / "val" / one["images"][0]["file_name"]
    assert label_path(first) == tmp_path / "labels" / "val" / f"{first.stem}.txt"
    width, height = one["images"][0]["width"], one["images"][0]["height"]
    label_path(first).write_text("3 0.1 0.2 0.5 0.25 0.4 0.9 0.2 0.6\n")  # a polygon of four points
    read = read_instances("yolo", data_yaml, "val").data
    [ann] = read["annotations"]
    np.testing.assert_allclose(ann["bbox"], [0.1 * width, 0.2 * height, 0.4 * width, 0.7 * height])
    assert ann["category_id"] == 4 and len(read["images"]) == 2  # the second image: no label file


def test_repeated_yolo_lines_are_one_object_with_a_note(tmp_path, voc100):
    """As ultralytics does: a line that repeats an earlier one of its file (same class and box) is
    left out, with one note; the same box under another class, or in another file, is kept."""
    coco, images = voc100
    one = {**coco, "images": coco["images"][:2], "annotations": []}
    data_yaml = write_yolo(one, images, tmp_path)
    first, second = (tmp_path / "images" / "val" / image["file_name"] for image in one["images"])
    label_path(first).write_text("1 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.2 0.2\n1 0.50 0.5 0.2 0.20\n")
    label_path(second).write_text("1 0.5 0.5 0.2 0.2\n")
    with pytest.warns(UserWarning, match=r"left out 2 repeated label line\(s\).*line 2, .*line 4"):
        read = read_instances("yolo", data_yaml, "val").data
    by_image = sorted((ann["image_id"], ann["category_id"]) for ann in read["annotations"])
    assert by_image == [(1, 2), (1, 3), (2, 2)]


def test_difficult_objects_are_crowd_regions_that_pycocotools_ignores(tmp_path, voc100):
    coco, images = voc100
    image = coco["images"][0]
    anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
    ann = {**anns[0], "iscrowd": 1}
    write_voc({**coco, "images": [image], "annotations": [ann]}, images, tmp_path / "VOC")
    read = read_instances("voc", tmp_path / "VOC", "val", class_names=[c["name"] for c in coco["categories"]]).data
    assert read["annotations"][0]["iscrowd"] == 1 and read["annotations"][0]["bbox"] == ann["bbox"]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = read
        gt.createIndex()
    assert gt.getAnnIds(iscrowd=False) == [] and len(gt.getAnnIds()) == 1


@pytest.mark.parametrize("layout", ["voc", "yolo"])
def test_convert_writes_coco_json_that_pycocotools_reads_with_the_original_boxes(layouts, tmp_path, capsys, layout):
    out = tmp_path / "out" / "instances.json"
    args = ["data", "convert", "--from", layout, str(layouts[layout]), "--split", "val", "--out", str(out)]
    if layout == "voc":
        names = tmp_path / "names.txt"
        names.write_text("\n".join(layouts["voc_names"]) + "\n")
        args += ["--names", str(names)]
    assert main(args) == 0, capsys.readouterr().err
    assert "100 images, 273 annotations, 20 categories" in capsys.readouterr().out
    with contextlib.redirect_stdout(io.StringIO()):
        written = COCO(str(out))
    assert_same_boxes(written.dataset, layouts["coco"], tolerance=0.0 if layout == "voc" else 1e-9)
    assert all("origin" not in ann for ann in written.dataset["annotations"])
    assert [p.name for p in out.parent.iterdir()] == ["instances.json"]  # no temporary file left


def test_convert_imports_no_torch(layouts, tmp_path):
    program = ("import sys; from densevit.cli import main; code = main(sys.argv[1:]); "
               "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision', 'timm'}), code)")
    done = subprocess.run([sys.executable, "-c", program, "data", "convert", "--from", "yolo", str(layouts["yolo"]),
                           "--out", str(tmp_path / "val.json")], capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines()[-1] == "[] 0", done.stdout + done.stderr


# ----------------------------------------------------------------------------- training and evaluation


def tiny_config(data: dict) -> dict:
    return {
        "task": "detection", "name": "layouts", "seed": 0,
        "model": {"name": "detr_tiny", "num_classes": 0, "kwargs": {"num_queries": 100}},
        "data": {"train_scales": [96], "max_size": 128, "crop": False, "val_size": 96, **data},
        "loss": {"classification": "sigmoid", "cost_class": 2.0, "weight_class": 2.0},
        "train": {"iters": 1, "batch_size": 2, "eval_batch_size": 1, "eval_every": 0, "checkpoint_every": 0,
                  "final_eval": "skip", "precision": "fp32", "progress": False, "tensorboard": False,
                  "plot_curves": False},
    }


@pytest.fixture(scope="module")
def subset_configs(voc100, tmp_path_factory) -> dict[str, Path]:
    """Config files of the first SUBSET images of voc100 in each layout."""
    coco, images = voc100
    kept = coco["images"][:SUBSET]
    ids = {i["id"] for i in kept}
    subset = {**coco, "images": kept, "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}
    base = tmp_path_factory.mktemp("subset")
    (base / "instances.json").write_text(json.dumps(subset))
    names = write_voc(subset, images, base / "VOC2007")
    data = {
        "coco": {"train_images": str(images), "train_annotations": str(base / "instances.json"),
                 "val_annotations": str(base / "instances.json")},
        "voc": {"format": "voc", "root": str(base / "VOC2007"), "train_split": "val", "class_names": names},
        "yolo": {"format": "yolo", "root": str(write_yolo(subset, images, base / "yolo"))},
    }
    configs = {}
    for layout, fields in data.items():
        configs[layout] = base / f"{layout}.yaml"
        configs[layout].write_text(yaml.safe_dump(tiny_config(fields)))
    return configs


@pytest.mark.slow
def test_one_training_step_and_evaluation_give_the_same_coco_ap_in_every_layout(subset_configs, tmp_path, capsys):
    """Trained one step on the VOC layout; that checkpoint scored on the three layouts of the same images
    (scores near 0 after one step: the test below compares scores far from 0)."""
    run = tmp_path / "run"
    assert main(["train", str(subset_configs["voc"]), "--out", str(run), "--device", "cpu"]) == 0, capsys.readouterr().err
    metrics = {}
    for layout in ("coco", "yolo", "voc"):
        out = tmp_path / f"{layout}.json"
        rc = main(["evaluate", str(subset_configs[layout]), "--checkpoint", str(run / "last.pth"), "--device", "cpu",
                   "--out", str(out)])
        assert rc == 0, capsys.readouterr().err
        metrics[layout] = json.loads(out.read_text())
    assert metrics["yolo"] == metrics["coco"]
    assert metrics["voc"] == metrics["coco"]


def test_the_validation_sets_of_every_layout_score_the_same_detections_alike(voc100, layouts, tmp_path):
    """Each layout's validation set and evaluator, fed the same detections per picture (the true
    boxes jittered, some missed, some false, random scores): the same COCO AP, far from 0 and 1."""
    from densevit.config import build_config
    from densevit.engine.build import build_task

    coco, images = voc100
    configs = {
        "coco": {"train_images": str(images), "train_annotations": str(images.parent / "annotations" / "instances.json"),
                 "val_annotations": str(images.parent / "annotations" / "instances.json")},
        "voc": {"format": "voc", "root": str(layouts["voc"]), "train_split": "val", "class_names": layouts["voc_names"]},
        "yolo": {"format": "yolo", "root": str(layouts["yolo"])},
    }
    rng = np.random.default_rng(0)
    by_file = boxes_by_file(coco)
    detections = {}  # file -> (xyxy boxes, class names, scores)
    for name, anns in by_file.items():
        kept = [(c, b) for c, b, _ in anns if rng.random() > 0.2]
        boxes = [[x, y, x + w, y + h] + rng.normal(0, 0.08 * max(w, h), 4) for _, (x, y, w, h) in kept]
        boxes.append([10.0, 10.0, 60.0, 80.0])  # a false detection in every picture
        classes = [c for c, _ in kept] + [coco["categories"][0]["name"]]
        detections[name] = (np.array(boxes), classes, rng.random(len(boxes)))
    metrics = {}
    for layout, data in configs.items():
        task = build_task(build_config(tiny_config(data)))
        val = task.build_val_dataset()
        evaluator = task.build_evaluator()
        evaluator.reset()
        label_of = {name: i for i, name in enumerate(task.class_names())}
        file_of = {image["id"]: Path(image["file_name"]).name for image in val.coco.dataset["images"]}
        for record in val.records:
            boxes, classes, scores = detections[file_of[record.image_id]]
            evaluator.process([{"boxes": torch.tensor(boxes), "labels": torch.tensor([label_of[c] for c in classes]),
                                "scores": torch.tensor(scores)}], [{"image_id": torch.tensor(record.image_id)}])
        metrics[layout] = evaluator.compute()
    assert 0.2 < metrics["coco"]["AP"] < 0.9
    assert metrics["voc"] == metrics["coco"]
    assert metrics["yolo"] == metrics["coco"]


@pytest.mark.parametrize("layout", ["voc", "yolo"])
def test_predict_names_pictures_by_the_ids_of_their_layout(layouts, layout):
    """YOLO numbers images 1..N in path order, VOC in the order of the split's list (here the COCO
    file's order); predict gives the pictures those ids, and export takes the first as its example."""
    from PIL import Image

    from densevit.config import build_config
    from densevit.engine.build import build_task
    from densevit.inference.detection import _example_picture, known_image_ids

    data = ({"format": "voc", "root": str(layouts["voc"]), "class_names": layouts["voc_names"]} if layout == "voc"
            else {"format": "yolo", "root": str(layouts["yolo"])})
    files = [image["file_name"] for image in layouts["coco"]["images"]]
    order = files if layout == "voc" else sorted(files)
    task = build_task(build_config(tiny_config(data)))
    assert known_image_ids(task) == {name: i for i, name in enumerate(order, 1)}
    first = np.array(Image.open(layouts["images"] / order[0]).convert("RGB"))
    np.testing.assert_array_equal(_example_picture(task, None), first)
