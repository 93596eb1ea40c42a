"""Volume segmentation predictions: label volumes laid out as the ground truth is, so that
``densevit score`` pairs them directly, and a picture of each case in ``pictures/``.

A volume file (NIfTI; NRRD or MetaImage through SimpleITK), a DICOM series folder, or a folder
of cases as training reads them, is preprocessed as in training and segmented by
:func:`~densevit.segmentation.inferer.segment_volume`. The labels go where the ground truth's
would be, on the input's voxel grid (spacing, origin, direction) and in its format: a file
``NAME.nii.gz`` gives ``NAME.nii.gz`` (nnU-Net's ``_0000`` channel suffix dropped), ``NAME.nrrd``
or ``NAME.nhdr`` gives ``NAME.nrrd``, ``NAME.mha`` or ``NAME.mhd`` gives ``NAME.mha``; a DICOM
series folder ``NAME/`` gives ``NAME.nii.gz`` (NIfTI with the series' geometry); a Decathlon
folder (``imagesTr``) gives ``CASE.<suffix>`` as in ``labelsTr``, a folder of case folders gives
``CASE/<data.label_name>.<suffix>``; ``pictures/CASE.png`` shows the slice with the most foreground.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from densevit.data.sitk_volumes import WRITTEN_SUFFIX, is_dicom_folder, sitk_suffix
from densevit.data.volumes import VOLUME_SUFFIXES, find_nifti_cases, load_case
from densevit.errors import UserInputError
from densevit.inference.export import EXPORTERS, ExportSpec
from densevit.inference.pictures import (
    MIN_PICTURE_SIDE,
    PICTURES,
    overlay,
    to_uint8_grey,
    zoom_for,
    zoomed,
)
from densevit.inference.predictor import RUNNERS, Predictor
from densevit.inference.segmentation import SegmentationGraph, graph_metadata
from densevit.inference.writers import write_label_volume, write_png
from densevit.segmentation.inferer import segment_volume
from densevit.segmentation.volume_task import VolumeSegmentationTask


def written_suffix(image: Path) -> str:
    """The suffix of the labels predicted for ``image``: its own format's (a DICOM series: NIfTI)."""
    suffix = sitk_suffix(image.name)
    return WRITTEN_SUFFIX[suffix] if suffix else ".nii.gz"


def volume_inputs(task: VolumeSegmentationTask, inputs: list[Path]) -> list[tuple[str, list[Path], Path]]:
    """``(case id, image files, where its labels go relative to the output folder)`` of every
    volume file, DICOM series folder and case in the folders of ``inputs`` (see the module docstring)."""
    cases = []
    label_name = task.data.label_name or "label"
    for path in inputs:
        suffix = next((s for s in VOLUME_SUFFIXES if path.name.lower().endswith(s)), None)
        if path.is_file() and suffix:
            case = path.name[: -len(suffix)]
            if path.parent.name.startswith("images"):
                case = re.sub(r"_\d{4}$", "", case)  # nnU-Net: one file per channel
            cases.append((case, [path], Path(case + written_suffix(path))))
        elif is_dicom_folder(path):
            cases.append((path.name, [path], Path(path.name + written_suffix(path))))
        elif path.is_dir():
            decathlon = (path / "imagesTr").is_dir() or (path / "imagesTs").is_dir()
            for case, images, _ in find_nifti_cases(path, task.data.modalities, task.data.label_name):
                written = written_suffix(images[0])
                cases.append((case, images, Path(case + written) if decathlon else Path(case) / (label_name + written)))
        elif path.exists():
            raise UserInputError(f"{path}: expected a volume ({', '.join(VOLUME_SUFFIXES)}), a DICOM series "
                                 "folder or a folder of cases")
        else:
            raise UserInputError(f"{path}: no such file or folder")
    return cases


@RUNNERS.register("volume_segmentation")
def predict_volumes(predictor: Predictor, inputs: list[Path], out_dir: Path) -> dict[str, Any]:
    """Segment every volume of ``inputs``; see the module docstring for the files."""
    task: VolumeSegmentationTask = predictor.task  # type: ignore[assignment]
    d = task.data
    reading = task.reading()
    written = []
    for case_id, images, target in volume_inputs(task, inputs):
        case = load_case(case_id, images, None, reading["normalisation"], reading["ct_window"])
        channels, expected = case.image.shape[0], getattr(predictor.model, "in_chans", case.image.shape[0])
        if channels != expected and not (channels == 1 and expected == 3):
            raise UserInputError(f"{images[0]}: {channels} image channel(s), but the model takes {expected} "
                                 "(data.modalities)")
        volume = torch.from_numpy(case.image).to(predictor.device)
        with predictor.running():
            labels = segment_volume(predictor.model, volume, d.crop_size, predictor.options.batch_size or d.eval_chunk)
        labels = labels.cpu().numpy()
        written.append(write_label_volume(labels, case.affine, out_dir / target, case.header))
        if predictor.options.pictures:
            z = int(np.argmax((labels > 0).sum(axis=(0, 1))))
            palette: list = [None, *task.palette()[1:]]
            grey = to_uint8_grey(case.image[0, :, :, z])
            zoom = zoom_for(*grey.shape[:2], MIN_PICTURE_SIDE)  # enlarged before the legend is drawn
            picture = overlay(zoomed(grey, zoom), zoomed(labels[:, :, z], zoom), palette, class_names=task.class_names())
            write_png(picture, out_dir / PICTURES / f"{case_id}.png")
    if not written:
        raise UserInputError(f"no volumes found in {', '.join(map(str, inputs))}")
    return {"volumes": len(written), "label_volumes": [str(p) for p in written]}


@EXPORTERS.register("volume_segmentation")
def volume_export(task: VolumeSegmentationTask, model: nn.Module, sample: Path | None) -> ExportSpec:
    """Two slices of the sample volume resized to the training size, and one of another size."""
    d = task.data
    divisor = getattr(model, "size_divisor", 1)
    folder = task.validation_root() if d.kind != "synapse" else None
    cases = volume_inputs(task, [sample]) if sample is not None else volume_inputs(task, [folder]) if folder else []
    if cases:
        case_id, images, _ = cases[0]
        volume = torch.from_numpy(load_case(case_id, images, None, d.normalisation, d.ct_window).image)
    else:
        volume = torch.rand(getattr(model, "in_chans", 1), *d.crop_size, 4)
    middle = volume.shape[-1] // 2
    slices = volume[..., [middle, min(middle + 1, volume.shape[-1] - 1)]].permute(3, 0, 1, 2).float()
    inputs = F.interpolate(slices, size=tuple(d.crop_size), mode="bilinear", align_corners=False)
    other = F.interpolate(slices[:1], size=(d.crop_size[0] + divisor, d.crop_size[1] + 2 * divisor),
                          mode="bilinear", align_corners=False)
    return ExportSpec(SegmentationGraph(model).eval(), (inputs,), (other,), ["images"], ["logits"],
                      metadata=graph_metadata(model, divisor))
