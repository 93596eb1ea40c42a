"""Pictures of "ground truth | prediction" for the first validation samples (``densevit evaluate --save-pictures``).

Each task's way of drawing one comparison is registered in :data:`COMPARISONS` under the task's
name, as prediction runners are in :data:`~densevit.inference.predictor.RUNNERS`; a custom task
registers its own the same way::

    @COMPARISONS.register("my_task")
    def compare_my_task(predictor: Predictor, dataset, index: int, score_threshold: float) -> tuple[str, np.ndarray]: ...

Ground truth comes from the task's validation dataset, predictions from the step that
``densevit predict`` runs (:class:`~densevit.inference.detection.Detector`,
:func:`~densevit.inference.segmentation.segment_pictures`; volumes: ``segment_volume`` on the case
as validation read it), so a picture shows what ``predict`` would find. Both panels use the task's
class colours; segmentation pictures carry a legend of the classes present in either panel.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from densevit.engine.task import Task
from densevit.errors import UserInputError
from densevit.inference.options import PredictOptions
from densevit.inference.pictures import (
    MIN_DRAWN_SIDE,
    PANEL_GAP,
    class_palette,
    classes_present,
    draw_detections,
    font_size,
    legend,
    overlay,
    side_by_side,
    to_uint8_grey,
    zoom_for,
    zoomed,
)
from densevit.inference.predictor import Predictor
from densevit.inference.writers import write_png
from densevit.io import writable_folder
from densevit.registry import Registry

# (predictor, validation dataset, sample index, score threshold) -> (file stem, picture [H,W,3] uint8)
Comparison = Callable[[Predictor, Dataset, int, float], tuple[str, np.ndarray]]
COMPARISONS = Registry("comparison picture")
GROUND_TRUTH, PREDICTION = "ground truth", "prediction"


def save_comparisons(task: Task, model: nn.Module, dataset: Dataset, count: int, out_dir: str | Path,
                     device: str | torch.device = "cpu", score_threshold: float = 0.5) -> list[Path]:
    """Write ``out_dir/NNN_<name>.png`` for the first ``count`` samples of ``dataset``; returns the files.

    The model is run through a :class:`Predictor` (eval mode, no gradients): the caller's
    metrics, computed before, are not touched.
    """
    name = getattr(task, "name", type(task).__name__)
    if name not in COMPARISONS:
        raise UserInputError(f"--save-pictures: task {name!r} has no comparison pictures "
                             f"(known: {', '.join(COMPARISONS.names())})")
    out_dir = writable_folder(out_dir, "pictures folder")
    predictor = Predictor(task, model, PredictOptions(device=str(device), pictures=False,
                                                      score_threshold=score_threshold))
    draw: Comparison = COMPARISONS.get(name)
    written = []
    for index in range(min(count, len(dataset))):  # type: ignore[arg-type]
        stem, picture = draw(predictor, dataset, index, score_threshold)
        written.append(write_png(picture, out_dir / f"{index:03d}_{stem}.png"))
    return written


def segmentation_comparison(image: np.ndarray, truth: np.ndarray, predicted: np.ndarray,
                            palette: list, class_names: list[str]) -> np.ndarray:
    """Overlays of ``truth`` and ``predicted`` [H,W] on ``image`` [H,W,3], enlarged to be read,
    side by side, with one legend of the classes present in either -> [H',W',3] uint8."""
    zoom = zoom_for(*image.shape[:2], MIN_DRAWN_SIDE)
    image, truth, predicted = zoomed(image, zoom), zoomed(truth, zoom), zoomed(predicted, zoom)
    panels = [(GROUND_TRUTH, overlay(image, truth, palette)), (PREDICTION, overlay(image, predicted, palette))]
    shown = sorted(set(classes_present(truth, palette)) | set(classes_present(predicted, palette)))
    width = 2 * image.shape[1] + PANEL_GAP
    return side_by_side(panels, legend(shown, class_names, palette, width, font_size(min(image.shape[:2]))))


@COMPARISONS.register("detection")
def compare_detection(predictor: Predictor, dataset: Dataset, index: int, score_threshold: float) -> tuple[str, np.ndarray]:
    """Ground-truth boxes (as training reads them: clipped, crowd regions left out) | predicted boxes
    scoring at least ``score_threshold``, on the original image."""
    from densevit.inference.detection import Detector

    record = dataset.records[index]  # type: ignore[attr-defined]
    image = dataset.load_image(index)  # type: ignore[attr-defined]
    _, class_names = predictor.task.categories  # type: ignore[attr-defined]
    truth = {"boxes": torch.from_numpy(record.boxes_xyxy), "labels": torch.from_numpy(record.labels)}
    predicted = Detector(predictor)([image])[0]
    palette = class_palette(len(class_names))
    shown = int((predicted["scores"] >= score_threshold).sum())
    panels = [
        (f"{GROUND_TRUTH} ({len(record.labels)})", np.asarray(draw_detections(image, truth, class_names, palette=palette))),
        (f"{PREDICTION} (score >= {score_threshold:g}: {shown})",
         np.asarray(draw_detections(image, predicted, class_names, score_threshold, palette=palette))),
    ]
    return record.path.stem, side_by_side(panels)


@COMPARISONS.register("image_segmentation")
def compare_images(predictor: Predictor, dataset: Dataset, index: int, score_threshold: float) -> tuple[str, np.ndarray]:
    """Ground-truth label map | predicted label map, coloured over the picture, with a legend."""
    from densevit.data.images import read_rgb
    from densevit.inference.segmentation import picture_inference, segment_pictures

    task: Any = predictor.task
    path = dataset.samples[index][0]  # type: ignore[attr-defined]
    truth = dataset.labels(index)  # type: ignore[attr-defined]
    rgb = read_rgb(path)
    predicted = segment_pictures(predictor, [rgb], picture_inference(predictor))[0]
    return path.stem, segmentation_comparison(rgb, truth, predicted, task.palette(), task.class_names())


@COMPARISONS.register("volume_segmentation")
def compare_volumes(predictor: Predictor, dataset: Dataset, index: int, score_threshold: float) -> tuple[str, np.ndarray]:
    """The slice with the most ground-truth foreground: ground truth | prediction, with a legend.

    The case is segmented as the volume runner does (:func:`~densevit.segmentation.inferer.segment_volume`
    with the options' batch size, else ``data.eval_chunk``) on the case as validation read it.
    """
    from densevit.segmentation.inferer import segment_volume

    task: Any = predictor.task
    case = dataset.cases[index]  # type: ignore[attr-defined]
    d = task.data
    with predictor.running():
        labels = segment_volume(predictor.model, torch.from_numpy(case.image).to(predictor.device), d.crop_size,
                                predictor.options.batch_size or d.eval_chunk)
    foreground = (case.label > 0) & (case.label != d.ignore_index)
    z = int(np.argmax(foreground.sum(axis=(0, 1))))
    palette: list = [None, *task.palette()[1:]]  # background left uncoloured, as in predict's pictures
    grey = to_uint8_grey(case.image[0, :, :, z])
    return case.case_id, segmentation_comparison(grey, case.label[:, :, z], labels[:, :, z].cpu().numpy(), palette,
                                                 task.class_names())
