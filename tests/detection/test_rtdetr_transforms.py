"""RT-DETR's augmentation: boxes follow the picture through every step, zoom-out and IoU crop do
what SSD's do, the stop-epoch policy, the batch resize, determinism."""
from __future__ import annotations

import pickle
import random
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision.ops import box_convert

from densevit.data.coco import CocoDetection
from densevit.data.compose import Compose
from densevit.data.det_transforms import apply
from densevit.data.rtdetr_transforms import (
    BRIGHTNESS,
    RTDETR_SCALES,
    MultiScaleBatchResize,
    RandomIoUCrop,
    RandomZoomOut,
    photometric_distort,
    rtdetr_train_transforms,
    rtdetr_val_transforms,
)

HEIGHT, WIDTH = 150, 200


def _compose(transform: A.BasicTransform | A.BaseCompose, seed: int) -> A.Compose:
    """One step alone, with the box handling the pipelines use."""
    bbox_params = A.BboxParams(format="pascal_voc", label_fields=["labels"], clip=True, min_width=1, min_height=1)
    return A.Compose([transform], bbox_params=bbox_params, seed=seed)


def _rectangle(box: tuple[int, int, int, int] = (60, 40, 130, 100)) -> tuple[np.ndarray, np.ndarray]:
    """A black HEIGHT x WIDTH picture with a white rectangle, and its box [1,4]."""
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return image, np.array([box], np.float32)


def _bright_extent(image: np.ndarray) -> np.ndarray:
    """xyxy pixel extent of the pixels brighter than halfway between the darkest and brightest."""
    gray = np.asarray(image, np.float32).mean(axis=2)
    ys, xs = np.nonzero(gray > (gray.min() + gray.max()) / 2)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


STEPS = {
    "photometric": lambda: photometric_distort(p=0.5),
    "zoom_out": lambda: RandomZoomOut(p=1.0),
    "iou_crop": lambda: RandomIoUCrop(p=1.0),
    "flip": lambda: A.HorizontalFlip(p=1.0),
    "resize": lambda: A.Resize(640, 640),
}


@pytest.mark.filterwarnings("ignore:Got processor for bboxes")  # the photometric step leaves boxes alone
@pytest.mark.parametrize("name", [*STEPS, "train_pipeline"])
def test_box_stays_on_the_white_rectangle(name):
    image, boxes = _rectangle()
    for seed in range(12):
        transform = rtdetr_train_transforms(seed=seed) if name == "train_pipeline" else _compose(STEPS[name](), seed)
        out, out_boxes, labels = apply(transform, image, boxes, np.array([4]))
        height, width = out.shape[:2]
        # one rectangle: the IoU crop keeps the box whose centre it must contain
        assert labels.tolist() == [4] and out_boxes.shape == (1, 4)
        assert (out_boxes[0, :2] >= 0).all() and out_boxes[0, 2] <= width and out_boxes[0, 3] <= height
        # interpolation blurs an edge over about a pixel
        np.testing.assert_allclose(out_boxes[0], _bright_extent(out), atol=2.0)


def test_zoom_out_shrinks_objects_by_the_canvas_factor():
    image, boxes = _rectangle()
    ratios, offsets = [], []
    for seed in range(20):
        out, out_boxes, _ = apply(_compose(RandomZoomOut(side_range=(1.0, 4.0), p=1.0), seed), image, boxes,
                                  np.array([0]))
        ratio_h, ratio_w = out.shape[0] / HEIGHT, out.shape[1] / WIDTH
        assert 1.0 <= ratio_w <= 4.0 and abs(ratio_h - ratio_w) < 1 / HEIGHT + 1 / WIDTH  # one factor, truncated
        ratios.append(ratio_w)
        # same pixels, so relative to the canvas the object is ratio times smaller
        np.testing.assert_allclose(out_boxes[0, 2:] - out_boxes[0, :2], boxes[0, 2:] - boxes[0, :2], atol=1e-3)
        relative = (out_boxes[0, 2] - out_boxes[0, 0]) / out.shape[1]
        assert relative == pytest.approx((boxes[0, 2] - boxes[0, 0]) / WIDTH / ratio_w, rel=1e-4)
        # the picture lands whole at the box's shift, the rest of the canvas is filled with 0
        x0, y0 = np.round(out_boxes[0, :2] - boxes[0, :2]).astype(int)
        np.testing.assert_array_equal(out[y0:y0 + HEIGHT, x0:x0 + WIDTH], image)
        assert out.sum() == image.sum()
        offsets.append((x0 / (out.shape[1] - WIDTH + 1), y0 / (out.shape[0] - HEIGHT + 1)))
    assert min(ratios) < 1.5 and max(ratios) > 3.0
    # anywhere on the canvas: offsets spread over the free room in both directions
    assert np.ptp(np.array(offsets), axis=0).min() > 0.5


def _coordinate_image() -> np.ndarray:
    """HEIGHT x WIDTH picture whose pixel (y, x) is (x, y, 0): a crop tells its own offset."""
    ys, xs = np.mgrid[:HEIGHT, :WIDTH]
    return np.stack([xs, ys, np.zeros_like(xs)], axis=-1).astype(np.uint8)


BOXES = np.array([[10, 10, 60, 50], [40, 30, 150, 120], [150, 90, 190, 140], [5, 100, 40, 145]], np.float32)


def _iou(boxes: np.ndarray, region: np.ndarray) -> np.ndarray:
    wh = np.clip(np.minimum(boxes[:, 2:], region[2:]) - np.maximum(boxes[:, :2], region[:2]), 0, None)
    inter = wh.prod(axis=1)
    return inter / ((boxes[:, 2:] - boxes[:, :2]).prod(axis=1) + (region[2:] - region[:2]).prod() - inter)


@pytest.mark.parametrize("min_iou", [0.1, 0.5])
def test_iou_crop_keeps_a_box_with_the_minimum_iou_and_drops_boxes_centred_outside(min_iou):
    image, labels = _coordinate_image(), np.arange(len(BOXES))
    cropped = 0
    for seed in range(30):
        out, out_boxes, out_labels = apply(_compose(RandomIoUCrop(min_ious=[min_iou], p=1.0), seed), image, BOXES,
                                           labels)
        x0, y0 = int(out[0, 0, 0]), int(out[0, 0, 1])
        region = np.array([x0, y0, x0 + out.shape[1], y0 + out.shape[0]], np.float32)
        np.testing.assert_array_equal(out, image[y0:y0 + out.shape[0], x0:x0 + out.shape[1]])
        if out.shape[:2] == image.shape[:2]:
            np.testing.assert_allclose(out_boxes, BOXES, atol=1e-3)  # given up: the input unchanged
            continue
        cropped += 1
        centres = (BOXES[:, :2] + BOXES[:, 2:]) / 2
        inside = ((region[:2] < centres) & (centres < region[2:])).all(axis=1)
        assert out_labels.tolist() == labels[inside].tolist()
        assert _iou(BOXES[inside], region).max() >= min_iou
        expected = np.clip(BOXES[inside] - region[[0, 1, 0, 1]], 0, region[[2, 3, 2, 3]] - region[[0, 1, 0, 1]])
        np.testing.assert_allclose(out_boxes, expected, atol=1e-3)
    assert cropped >= 20


def test_iou_crop_returns_the_input_without_boxes_or_without_a_possible_crop():
    image = _coordinate_image()
    out, boxes, _ = apply(_compose(RandomIoUCrop(p=1.0), 0), image, np.zeros((0, 4), np.float32),
                          np.zeros(0, np.int64))
    np.testing.assert_array_equal(out, image)
    assert boxes.shape == (0, 4)
    # a 2-pixel box cannot reach IoU 0.99 with a crop of at least 30% of each side: no endless loop
    tiny = np.array([[20, 20, 22, 22]], np.float32)
    out, boxes, _ = apply(_compose(RandomIoUCrop(min_ious=[0.99], trials=5, max_draws=3, p=1.0), 0), image, tiny,
                          np.array([1]))
    np.testing.assert_array_equal(out, image)
    np.testing.assert_allclose(boxes, tiny, atol=1e-3)


@pytest.mark.filterwarnings("ignore:Got processor for bboxes")
def test_photometric_distortion_scales_brightness_by_torchvisions_factors():
    # on a uniform grey picture contrast, saturation, hue and channel order change nothing,
    # and brightness multiplies (torchvision), not adds (albumentations' RandomBrightnessContrast)
    image = np.full((8, 8, 3), 160, np.uint8)
    values = set()
    for seed in range(40):
        out = _compose(photometric_distort(p=0.5), seed)(image=image, bboxes=[], labels=[])["image"]
        assert out.dtype == np.uint8 and (out == out[0, 0, 0]).all()
        values.add(int(out[0, 0, 0]))
    low, high = 160 * BRIGHTNESS[0], 160 * BRIGHTNESS[1]
    assert all(low - 1 <= v <= high + 1 for v in values)
    assert 160 in values and len(values) > 5  # applied about half the time, at different factors


def test_val_output_is_square_float_in_unit_range():
    image, boxes = _rectangle()
    out, out_boxes, labels = apply(rtdetr_val_transforms(640), image, boxes, np.array([2]))
    assert out.shape == (640, 640, 3) and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0  # no mean/std: black stays 0, white becomes 1
    np.testing.assert_allclose(out_boxes[0], boxes[0] * ([640 / WIDTH, 640 / HEIGHT] * 2), rtol=1e-5)
    assert labels.tolist() == [2]


def test_val_keeps_boxes_of_any_size_and_normalize_flag_uses_imagenet_statistics():
    image, boxes = _rectangle()
    small = np.array([[0, 0, 0.5, 0.5]], np.float32)  # under a pixel after the resize to 64
    _, out_boxes, _ = apply(rtdetr_val_transforms(64), image, small, np.array([0]))
    assert len(out_boxes) == 1
    unit, _, _ = apply(rtdetr_val_transforms(64), image, boxes, np.array([0]))
    normalised, _, _ = apply(rtdetr_val_transforms(64, normalize=True), image, boxes, np.array([0]))
    expected = (unit - np.array(IMAGENET_DEFAULT_MEAN)) / np.array(IMAGENET_DEFAULT_STD)
    np.testing.assert_allclose(normalised, expected, atol=1e-5)


def test_training_drops_boxes_under_the_minimum_size():
    image, boxes = _rectangle()
    boxes = np.concatenate([boxes, [[5, 5, 5.8, 40]]]).astype(np.float32)  # 0.8 pixels wide
    for seed in range(5):
        _, out_boxes, labels = apply(rtdetr_train_transforms(stop_epoch=0, seed=seed), image, boxes,
                                     np.array([1, 2]))
        assert labels.tolist() == [1] and len(out_boxes) == 1


def test_stop_epoch_turns_the_strong_operations_off():
    # a textured picture, so that any strong operation shows; no flip, so that without them the
    # pipeline is the plain resize
    image = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    boxes, labels = np.array([[60, 40, 130, 100]], np.float32), np.array([3])
    plain, plain_boxes, _ = apply(rtdetr_val_transforms(320), image, boxes, labels)

    def differing(transform: A.Compose, calls: int = 8) -> int:
        outputs = [apply(transform, image, boxes, labels) for _ in range(calls)]
        return sum(not np.array_equal(out, plain) for out, _, _ in outputs)

    train = rtdetr_train_transforms(320, stop_epoch=5, hflip=0.0, seed=0)
    train.set_epoch(4)
    assert differing(train) >= 7  # all the strong coins failing together is rare, not impossible
    train.set_epoch(5)
    for _ in range(4):
        after, after_boxes, _ = apply(train, image, boxes, labels)
        np.testing.assert_array_equal(after, plain)
        np.testing.assert_array_equal(after_boxes, plain_boxes)
    train.set_epoch(0)
    assert differing(train) >= 7
    never = rtdetr_train_transforms(320, stop_epoch=None, hflip=0.0, seed=0)
    never.set_epoch(10_000)
    assert differing(never) >= 7


def test_training_pipeline_is_deterministic_given_its_seed_and_survives_pickling():
    image, boxes = _rectangle()

    def run(transform: A.Compose) -> list[tuple[np.ndarray, np.ndarray]]:
        return [apply(transform, image, boxes, np.array([1]))[:2] for _ in range(6)]

    first, second = run(rtdetr_train_transforms(256, seed=11)), run(rtdetr_train_transforms(256, seed=11))
    for (a, a_boxes), (b, b_boxes) in zip(first, second):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a_boxes, b_boxes)
    other = run(rtdetr_train_transforms(256, seed=12))
    assert any(not np.array_equal(a, b) for (a, _), (b, _) in zip(first, other))
    # loader workers started by spawn receive the pipeline pickled, with its epoch
    transform = rtdetr_train_transforms(256, stop_epoch=3, seed=11)
    transform.set_epoch(3)
    copy = pickle.loads(pickle.dumps(transform))
    np.testing.assert_array_equal(apply(copy, image, boxes, np.array([1]))[0],
                                  apply(transform, image, boxes, np.array([1]))[0])


def test_seeded_pipeline_gives_its_transforms_independent_coins():
    # albumentations seeds every transform of a seeded Compose alike: two flips with p=0.5
    # would then agree on every call
    image = np.arange(4, dtype=np.uint8).reshape(2, 2, 1).repeat(3, axis=2)  # corner values 0..3
    compose = Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)], seed=0)
    for reseed in (None, 3):  # set_random_seed is what a per-worker reseed would call
        if reseed is not None:
            compose.set_random_seed(reseed)
        corners = [int(compose(image=image)["image"][0, 0, 0]) for _ in range(400)]
        # corner 1: flipped horizontally only, 2: vertically only
        assert 0.35 < sum(c in (1, 2) for c in corners) / len(corners) < 0.65


def test_batch_resize_draws_from_the_scales_and_leaves_normalised_boxes_valid():
    images = torch.zeros(2, 3, 64, 64)
    images[:, :, 16:32, 8:40] = 1.0  # the box (8, 16, 40, 32) of a 64 x 64 picture
    box = torch.tensor([8, 16, 40, 32]) / 64
    resize = MultiScaleBatchResize(scales=[48, 96, 128], seed=0)
    sizes = set()
    for _ in range(20):
        out = resize(images)
        size = out.shape[-1]
        sizes.add(size)
        assert out.shape == (2, 3, size, size)
        ys, xs = torch.nonzero(out[0, 0] > 0.5, as_tuple=True)
        extent = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / size
        assert torch.allclose(extent, box, atol=1 / size)  # the same normalised box, at any scale
        assert set(out.unique().tolist()) <= {0.0, 1.0}  # nearest, as RT-DETR
    assert sizes == {48, 96, 128}


def test_batch_resize_weights_repeated_scales_and_is_reproducible():
    resize = MultiScaleBatchResize(seed=5)
    draws = [resize.draw_size() for _ in range(1300)]
    assert set(draws) == set(RTDETR_SCALES)
    assert 230 < draws.count(640) < 370 and all(60 < draws.count(s) < 140 for s in set(RTDETR_SCALES) - {640})
    again = MultiScaleBatchResize(seed=5)
    assert [again.draw_size() for _ in range(1300)] == draws
    # without a seed: Python's random, which DataLoader workers have seeded
    unseeded = MultiScaleBatchResize()
    random.seed(1)
    first = [unseeded.draw_size() for _ in range(20)]
    random.seed(1)
    assert [unseeded.draw_size() for _ in range(20)] == first


def test_batch_resize_stops_at_its_epoch():
    images = torch.rand(2, 3, 40, 40)
    resize = MultiScaleBatchResize(scales=[64], stop_epoch=2, seed=0)
    resize.set_epoch(1)
    assert resize(images).shape[-2:] == (64, 64)
    resize.set_epoch(2)
    assert resize(images) is images


def test_coco_samples_through_the_rtdetr_pipeline(real_data: Path):
    root = real_data / "voc100"
    dataset = CocoDetection(root / "images", root / "annotations" / "instances.json",
                            rtdetr_train_transforms(320, seed=0))
    for index in range(8):
        image, target = dataset[index]
        assert image.shape == (3, 320, 320) and image.dtype == torch.float32
        assert image.min() >= 0 and image.max() <= 1
        boxes = box_convert(target["boxes"], "cxcywh", "xyxy")
        assert ((boxes >= -1e-6) & (boxes <= 1 + 1e-6)).all()
        assert (target["boxes"][:, 2:] * 320 >= 1 - 1e-4).all()  # nothing under a pixel survives
        assert len(target["boxes"]) == len(target["labels"])
