"""``densevit predict`` for segmentation: NIfTI volumes and images in, label files and overlays out.

* A volume (``.nii``/``.nii.gz``, or a folder of cases as training reads them) is
  preprocessed as in training, segmented slice by slice, and written as ``NAME_seg.nii.gz``
  (uint8 labels, the input's affine), with ``NAME_overlay.png`` showing the slice with the
  most foreground.
* An image is segmented whole when it fits the training crop and by overlapping sliding
  windows when it is larger; it gives ``NAME.png`` (class indices) and ``NAME_overlay.png``.
  A folder stands for the images in it.
Every file is written to a temporary name first and then renamed, so no half-written
result is ever left behind.
"""
from __future__ import annotations

from argparse import Namespace
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import torch
from PIL import Image
from torch import nn

from densevit.data import IMAGE_SUFFIXES
from densevit.data.seg_transforms import street_eval
from densevit.data.volumes import NIFTI_SUFFIXES, find_nifti_cases, load_case
from densevit.errors import UserInputError
from densevit.io import atomic_path
from densevit.segmentation.inference import (
    overlay,
    pad_to_multiple,
    predict_volume,
    sliding_window_logits,
    to_uint8_grey,
)

MIN_PICTURE_SIDE = 256

if TYPE_CHECKING:
    from densevit.segmentation.task import SegmentationTask


def predict_files(task: "SegmentationTask", model: nn.Module, inputs: list[Path], out_dir: Path, options: Namespace) -> list[Path]:
    """Segment every input and write the results to ``out_dir``; returns the label files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    written = []
    for path in map(Path, inputs):
        if not path.exists():
            raise UserInputError(f"{path}: input not found")
        if path.name.endswith(NIFTI_SUFFIXES):
            written.append(_predict_volume(task, model, path.name.split(".nii")[0], [path], out_dir, options))
        elif path.is_dir() and task.is_volume:
            for case_id, images, _ in find_nifti_cases(path, task.data.modalities, task.data.label_name):
                written.append(_predict_volume(task, model, case_id, images, out_dir, options))
        elif path.is_dir():
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise UserInputError(f"{path}: no .png/.jpg images in this folder")
            written += [_predict_image(task, model, image, out_dir, options) for image in images]
        else:
            written.append(_predict_image(task, model, path, out_dir, options))
    return written


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _predict_volume(
    task: "SegmentationTask", model: nn.Module, case_id: str, images: list[Path], out_dir: Path, options: Namespace
) -> Path:
    d = task.data
    case = load_case(case_id, images, None, d.normalisation, d.ct_window)
    channels, expected = case.image.shape[0], getattr(model, "in_chans", case.image.shape[0])
    if channels != expected and not (channels == 1 and expected == 3):
        raise UserInputError(
            f"{images[0]}: {channels} image channel(s), but the model takes {expected} (data.modalities)"
        )
    image = torch.from_numpy(case.image).to(_device(model))
    with torch.no_grad():
        labels = predict_volume(model, image, d.crop_size, getattr(options, "batch_size", None) or 16).cpu().numpy()
    header = nib.load(str(images[0])).header.copy()
    header.set_data_dtype(np.uint8)
    target = out_dir / f"{case_id}_seg.nii.gz"
    with atomic_path(target) as tmp:
        nib.save(nib.Nifti1Image(labels.astype(np.uint8), case.affine, header), str(tmp))
    z = int(np.argmax((labels > 0).sum(axis=(0, 1))))
    palette: list = [None, *task.palette()[1:]]
    picture = overlay(to_uint8_grey(case.image[0, :, :, z]), labels[:, :, z], palette)
    zoom = max(1, MIN_PICTURE_SIDE // max(picture.shape[:2]))  # small slices: enlarge to be seen
    _save_png(picture.repeat(zoom, axis=0).repeat(zoom, axis=1), out_dir / f"{case_id}_overlay.png")
    return target


def _predict_image(task: "SegmentationTask", model: nn.Module, path: Path, out_dir: Path, options: Namespace) -> Path:
    d = task.data
    try:
        rgb = np.asarray(Image.open(path).convert("RGB"))
    except OSError as err:
        raise UserInputError(f"{path}: cannot read image: {err}") from None
    image, _ = street_eval()(rgb, np.zeros(rgb.shape[:2], dtype=np.int64))
    image = image.to(_device(model))
    height, width = rgb.shape[:2]
    divisor = getattr(model, "size_divisor", d.size_divisor)
    overlap = getattr(options, "overlap", None)
    with torch.no_grad():
        if height > d.crop_size[0] or width > d.crop_size[1]:
            probs = sliding_window_logits(
                model, image, d.crop_size, 0.5 if overlap is None else overlap,
                getattr(options, "batch_size", None) or 4, divisor,
            )
        else:
            probs = model(pad_to_multiple(image[None], divisor))[0, :, :height, :width]
    labels = probs.argmax(dim=0).cpu().numpy().astype(np.uint8)
    target = out_dir / f"{path.stem}.png"
    _save_png(labels, target)
    _save_png(overlay(rgb, labels, task.palette()), out_dir / f"{path.stem}_overlay.png")
    return target


def _save_png(array: np.ndarray, target: Path) -> None:
    with atomic_path(target) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
