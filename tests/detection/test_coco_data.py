"""COCO-format loading: real VOC photos, bad annotations, odd image modes, transforms, collate."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_convert

from densevit.data.coco import CocoDetection
from densevit.data.collate import collate_detection
from densevit.data.det_transforms import train_transforms, val_transforms
from densevit.errors import UserInputError


def _voc(real_data: Path, transforms=None) -> CocoDetection:
    root = real_data / "voc100"
    return CocoDetection(root / "images", root / "annotations" / "instances.json", transforms or val_transforms(200, 333))


def test_voc100_targets_follow_the_file(real_data):
    dataset = _voc(real_data)
    raw = json.loads((real_data / "voc100" / "annotations" / "instances.json").read_text())
    assert len(dataset) == len(raw["images"])
    assert dataset.category_ids == sorted(c["id"] for c in raw["categories"])
    by_image = {}
    for ann in raw["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for index in (0, 17, 99):
        image, target = dataset[index]
        image_id = int(target["image_id"])
        assert image_id > 2**31  # the file's ids do not fit in 32 bits and must survive
        info = next(i for i in raw["images"] if i["id"] == image_id)
        assert target["orig_size"].tolist() == [info["height"], info["width"]]
        assert list(image.shape[1:]) == target["size"].tolist() and min(image.shape[1:]) == 200
        # boxes back to original pixels equal the file's xywh boxes
        h, w = info["height"], info["width"]
        boxes = box_convert(target["boxes"] * torch.tensor([w, h, w, h]), "cxcywh", "xywh")
        expected = torch.tensor([a["bbox"] for a in by_image[image_id]], dtype=torch.float32)
        assert torch.allclose(boxes, expected, atol=1e-3)
        labels = [dataset.category_ids[i] for i in target["labels"].tolist()]
        assert labels == [a["category_id"] for a in by_image[image_id]]


def test_training_transform_keeps_boxes_inside_and_normalised(real_data):
    dataset = _voc(real_data, train_transforms(scales=[160, 192], max_size=300, crop_resize_scales=[160],
                                               crop_size=(96, 150)))
    for index in range(12):
        image, target = dataset[index]
        assert image.dtype == torch.float32 and max(image.shape[1:]) <= 300
        boxes = box_convert(target["boxes"], "cxcywh", "xyxy")
        assert ((boxes >= -1e-6) & (boxes <= 1 + 1e-6)).all()
        assert (target["boxes"][:, 2:] > 0).all()
        assert len(target["boxes"]) == len(target["labels"])


def _write_set(tmp_path: Path, annotations: list[dict], images: list[dict] | None = None) -> Path:
    (tmp_path / "img").mkdir(exist_ok=True)
    Image.new("RGB", (64, 48), (120, 30, 30)).save(tmp_path / "img" / "a.jpg")
    data = {
        "images": images or [{"id": 7, "file_name": "a.jpg", "width": 64, "height": 48}],
        "annotations": annotations,
        "categories": [{"id": 3, "name": "cat"}, {"id": 11, "name": "dog"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


BAD = [
    ({"id": 2, "image_id": 7, "category_id": 3, "bbox": [5, 5, 0, 10]}, "not positive"),
    ({"id": 3, "image_id": 7, "category_id": 3, "bbox": [70, 5, 5, 5]}, "outside"),
    ({"id": 4, "image_id": 7, "category_id": 99, "bbox": [5, 5, 5, 5]}, "category_id 99 is not in 'categories'"),
    ({"id": 5, "image_id": 70, "category_id": 3, "bbox": [5, 5, 5, 5]}, "image_id 70 is not in 'images'"),
    ({"id": 6, "image_id": 7, "category_id": 3, "bbox": [5, 5, float("nan"), 5]}, "'bbox' must be 4 finite numbers"),
]


@pytest.mark.parametrize("bad,reason", BAD)
def test_bad_annotation_is_dropped_with_a_counted_warning_or_raised(tmp_path, bad, reason):
    good = {"id": 1, "image_id": 7, "category_id": 11, "bbox": [10, 10, 20, 20]}
    path = _write_set(tmp_path, [good, bad])
    with pytest.warns(UserWarning, match=rf"dropped 1 bad .*annotations\[1\] \(annotation id {bad['id']}.*{reason}"):
        dataset = CocoDetection(tmp_path / "img", path, val_transforms(48, 64), bad_annotations="drop")
    _, target = dataset[0]
    assert target["labels"].tolist() == [1]  # category 11 is the second class
    for policy in ("raise", "error"):  # "error": the older name
        with pytest.raises(UserInputError, match=rf"instances.json: annotations\[1\] \(annotation id {bad['id']}.*{reason}"):
            CocoDetection(tmp_path / "img", path, val_transforms(48, 64), bad_annotations=policy)
    with pytest.raises(UserInputError, match=rf"annotation id {bad['id']}.*{reason}"):
        CocoDetection(tmp_path / "img", path, val_transforms(48, 64))  # raise is the default


def test_missing_image_file_and_crowd_boxes(tmp_path):
    images = [{"id": 7, "file_name": "a.jpg", "width": 64, "height": 48},
              {"id": 8, "file_name": "gone.jpg", "width": 64, "height": 48}]
    anns = [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 1, 10, 10]},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [20, 20, 10, 10], "iscrowd": 1}]
    path = _write_set(tmp_path, anns, images)
    with pytest.warns(UserWarning, match=r"images\[1\] \(image id 8\): 'file_name': image file .*gone.jpg not found"):
        dataset = CocoDetection(tmp_path / "img", path, val_transforms(48, 64), bad_annotations="drop")
    assert len(dataset) == 1
    assert len(dataset[0][1]["boxes"]) == 1  # the crowd box is not a training target


def test_broken_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(UserInputError, match="broken.json: malformed JSON"):
        CocoDetection(tmp_path, path, val_transforms())


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_image_modes_become_rgb(tmp_path, mode):
    path = _write_set(tmp_path, [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 1, 10, 10]}])
    Image.new(mode, (64, 48)).save(tmp_path / "img" / "a.png")
    data = json.loads(path.read_text())
    data["images"][0]["file_name"] = "a.png"
    path.write_text(json.dumps(data))
    image, target = CocoDetection(tmp_path / "img", path, val_transforms(48, 64))[0]
    assert image.shape == (3, 48, 64)


def test_exif_rotated_photo_is_turned_upright(tmp_path):
    # stored 64 wide x 48 high with orientation 6 (rotate 90 degrees clockwise to display):
    # the annotations are made on the upright 48 x 64 picture
    pixels = np.zeros((48, 64, 3), np.uint8)
    pixels[:, :8] = 255  # a white stripe on the stored left edge: on top once upright
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "img").mkdir()
    Image.fromarray(pixels).save(tmp_path / "img" / "r.jpg", exif=exif.tobytes(), quality=95)
    images = [{"id": 1, "file_name": "r.jpg", "width": 48, "height": 64}]
    path = _write_set(tmp_path, [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 48, 8]}], images)
    dataset = CocoDetection(tmp_path / "img", path, val_transforms(48, 64))
    upright = dataset.load_image(0)
    assert upright.shape == (64, 48, 3)
    assert upright[:8].mean() > 200 and upright[16:].mean() < 30


def test_collate_pads_to_the_largest_image_with_a_mask():
    samples = [(torch.ones(3, 20, 30), {"id": 0}), (torch.ones(3, 25, 10), {"id": 1})]
    (images, mask), targets = collate_detection(samples, size_divisor=8)
    assert images.shape == (2, 3, 32, 32) and mask.shape == (2, 32, 32)
    assert mask[0, :20, :30].logical_not().all() and mask[0, 20:].all() and mask[0, :, 30:].all()
    assert images[0][:, 20:].abs().sum() == 0 and images[1][:, :25, :10].eq(1).all()
    assert [t["id"] for t in targets] == [0, 1]
