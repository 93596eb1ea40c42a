"""DETR: Hungarian matching per training step (ours vs the reference's cross-product cost), R50 speed.

Matching: a batch of ``--batch`` images, ``--queries`` queries, 1-30 targets per image, and
the main plus auxiliary outputs of ``--decoder-layers`` layers, as one training step matches
them. Ours builds each image's own [Q, N_i] cost block and copies them to the host at once;
the baseline (facebookresearch/detr's ``HungarianMatcher``) builds the [B*Q, sum N] cost of
every query against every target of the batch, copies it to the host and splits it per
image. Both run ``scipy.optimize.linear_sum_assignment``; the assignments must be identical.
Then DETR-R50 against RT-DETR-R50 (80 classes, the same images): training and inference
images/s and peak memory, on a GPU also in bf16 autocast and with ``torch.compile``; and the
share of RT-DETR's forward time spent in deformable attention. On the CPU each model runs in a
fresh process, whose peak resident size is its peak memory.
"""
from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable

import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert, generalized_box_iou

from densevit.bench import timed
from densevit.data.collate import PaddedImages
from densevit.detection.matcher import HungarianMatcher

NUM_CLASSES = 80


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--classes", type=int, default=91)
    parser.add_argument("--decoder-layers", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--model-batch", type=int, default=2, help="images per model step")
    parser.add_argument("--model-repeat", type=int, default=2)
    parser.add_argument("--size", type=int, nargs=2, default=(640, 640), metavar=("H", "W"),
                        help="image size of both models (RT-DETR's strides need multiples of 32)")
    parser.add_argument("--skip-model", action="store_true", help="only the matcher benchmark")


@torch.no_grad()
def cross_product_matching(outputs: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]],
                           cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0) -> list:
    """The reference DETR matcher: one cost matrix over the whole batch, split per image on the host."""
    bs, num_queries = outputs["pred_logits"].shape[:2]
    out_prob = outputs["pred_logits"].flatten(0, 1).softmax(-1)
    out_bbox = outputs["pred_boxes"].flatten(0, 1)
    tgt_ids = torch.cat([t["labels"] for t in targets])
    tgt_bbox = torch.cat([t["boxes"] for t in targets])
    cost = (cost_bbox * torch.cdist(out_bbox, tgt_bbox, p=1) - cost_class * out_prob[:, tgt_ids]
            - cost_giou * generalized_box_iou(box_convert(out_bbox, "cxcywh", "xyxy"),
                                              box_convert(tgt_bbox, "cxcywh", "xyxy")))
    cost = cost.view(bs, num_queries, -1).cpu()
    sizes = [len(t["boxes"]) for t in targets]
    indices = [linear_sum_assignment(c[i]) for i, c in enumerate(cost.split(sizes, -1))]
    return [(torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)) for i, j in indices]


def _step_outputs(args: argparse.Namespace, device: torch.device) -> tuple[list[dict], list[dict]]:
    gen = torch.Generator().manual_seed(0)
    layers = []
    for _ in range(args.decoder_layers):
        boxes = torch.cat([torch.rand(args.batch, args.queries, 2, generator=gen) * 0.8 + 0.1,
                           torch.rand(args.batch, args.queries, 2, generator=gen) * 0.3 + 0.02], -1)
        layers.append({"pred_logits": torch.randn(args.batch, args.queries, args.classes + 1, generator=gen).to(device),
                       "pred_boxes": boxes.to(device)})
    targets = []
    for _ in range(args.batch):
        n = int(torch.randint(1, 31, (1,), generator=gen))
        boxes = torch.cat([torch.rand(n, 2, generator=gen) * 0.8 + 0.1, torch.rand(n, 2, generator=gen) * 0.3 + 0.02], -1)
        targets.append({"labels": torch.randint(0, args.classes, (n,), generator=gen).to(device), "boxes": boxes.to(device)})
    return layers, targets


def matcher_benchmark(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    layers, targets = _step_outputs(args, device)
    matcher = HungarianMatcher()
    ours_s, ours = timed(lambda: [matcher(out, targets) for out in layers], args.repeat)
    base_s, base = timed(lambda: [cross_product_matching(out, targets) for out in layers], args.repeat)
    identical = all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                    for step_a, step_b in zip(ours, base) for a, b in zip(step_a, step_b))
    return {
        "setting": {"batch": args.batch, "queries": args.queries, "targets_per_image": "1-30",
                    "matchings_per_step": args.decoder_layers, "device": str(device)},
        "ours_seconds_per_step": round(ours_s, 5),
        "baseline_seconds_per_step": round(base_s, 5),
        "speedup": round(base_s / ours_s, 2),
        "assignments_identical": identical,
    }


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _detector(name: str, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module, bool]:
    """The model, its criterion, and whether its training forward takes the targets (denoising)."""
    from densevit.detection.criterion import SetCriterion
    from densevit.detection.rtdetr_criterion import RTDETRCriterion
    from densevit.models import create_model

    model = create_model(name, num_classes=NUM_CLASSES).to(device)
    if name.startswith("rtdetr"):
        return model, RTDETRCriterion(NUM_CLASSES, HungarianMatcher(2.0, 5.0, 2.0, "sigmoid")).to(device), True
    return model, SetCriterion(NUM_CLASSES, HungarianMatcher()).to(device), False


def _deformable_seconds(model: torch.nn.Module, forward: Callable[[], Any]) -> tuple[float, float]:
    """(forward seconds, seconds spent inside deformable attention) of one eval forward pass."""
    from densevit.detection.deformable import MSDeformableAttention

    spent, started = [0.0], [0.0]

    def before(*_: Any) -> None:
        _synchronize()
        started[0] = time.perf_counter()

    def after(*_: Any) -> None:
        _synchronize()
        spent[0] += time.perf_counter() - started[0]

    handles = [h for m in model.modules() if isinstance(m, MSDeformableAttention)
               for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))]
    total, _ = timed(forward)
    for handle in handles:
        handle.remove()
    return total, spent[0]


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def model_benchmark(name: str, size: tuple[int, int], batch_size: int, repeat: int, device: torch.device,
                    dtype: torch.dtype | None = None, compile_model: bool = False) -> dict[str, Any]:
    """Training step and inference throughput of ``name`` on ``batch_size`` images of ``size``
    (best of ``repeat``); ``dtype``: autocast (bf16); ``compile_model``: ``torch.compile`` the model."""
    model, criterion, takes_targets = _detector(name, device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    height, width = size
    images = torch.randn(batch_size, 3, height, width, device=device)
    batch = PaddedImages((images, torch.zeros(batch_size, height, width, dtype=torch.bool, device=device)))
    gen = torch.Generator().manual_seed(0)
    targets = [{"labels": torch.randint(0, NUM_CLASSES, (8,), generator=gen).to(device),
                "boxes": (torch.rand(8, 4, generator=gen) * 0.4 + 0.2).to(device)} for _ in range(batch_size)]
    network = torch.compile(model) if compile_model else model
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    def train_step() -> None:
        with autocast:
            outputs = network(batch, targets) if takes_targets else network(batch)
            loss = criterion(outputs, targets)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()

    def infer() -> None:
        with torch.no_grad(), autocast:
            network(batch)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    train_step()  # warm-up (and compilation)
    train_s, _ = timed(train_step, repeat)
    model.eval()
    infer()
    infer_s, _ = timed(infer, repeat)
    result = {
        "setting": {"model": name, "image_size": [height, width], "batch": batch_size, "device": str(device),
                    "autocast": str(dtype).replace("torch.", "") if dtype else "fp32", "compiled": compile_model},
        "train_images_per_second": round(batch_size / train_s, 3),
        "inference_images_per_second": round(batch_size / infer_s, 3),
        "peak_memory_mb": round(_peak_memory_mb(device), 1),
    }
    if takes_targets and not compile_model:
        with torch.no_grad(), autocast:
            total, deformable = _deformable_seconds(model, lambda: model(batch))
        result["deformable_attention_share_of_forward"] = round(deformable / total, 4)
    return result


def _in_fresh_process(*args: Any) -> dict[str, Any]:
    """``model_benchmark(*args)`` in a new process, so that its peak resident size is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(model_benchmark, *args).result()


def _compare(ours: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float]:
    return {f"{key}_ratio": round(ours[key] / baseline[key], 3)
            for key in ("train_images_per_second", "inference_images_per_second", "peak_memory_mb")}


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results: dict[str, Any] = {"matcher": matcher_benchmark(args, device)}
    if args.skip_model:
        return results
    variants = [(None, False)]
    if device.type == "cuda":
        variants += [(torch.bfloat16, False), (torch.bfloat16, True)]
    for dtype, compiled in variants:
        suffix = ("_bf16" if dtype else "") + ("_compiled" if compiled else "")
        measure = model_benchmark if device.type == "cuda" else _in_fresh_process
        setting = (tuple(args.size), args.model_batch, args.model_repeat, device, dtype, compiled)
        detr = measure("detr_r50", *setting)
        rtdetr = measure("rtdetr_r50", *setting)
        results[f"detr_r50{suffix}"] = detr
        results[f"rtdetr_r50{suffix}"] = rtdetr
        results[f"rtdetr_vs_detr{suffix}"] = _compare(rtdetr, detr)
    return results
