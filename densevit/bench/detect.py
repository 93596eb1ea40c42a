"""DETR: Hungarian matching per training step (ours vs the reference's cross-product cost), R50 speed.

Matching: a batch of ``--batch`` images, ``--queries`` queries, 1-30 targets per image, and
the main plus auxiliary outputs of ``--decoder-layers`` layers, as one training step matches
them. Ours builds each image's own [Q, N_i] cost block and copies them to the host at once;
the baseline (facebookresearch/detr's ``HungarianMatcher``) builds the [B*Q, sum N] cost of
every query against every target of the batch, copies it to the host and splits it per
image. Both run ``scipy.optimize.linear_sum_assignment``; the assignments must be identical.
Then DETR-R50's training step and inference throughput at 800x1066, with peak memory.
"""
from __future__ import annotations

import argparse
import resource
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert, generalized_box_iou

from densevit.bench import timed
from densevit.detection.matcher import HungarianMatcher


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--classes", type=int, default=91)
    parser.add_argument("--decoder-layers", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--model-batch", type=int, default=2, help="images per DETR-R50 step")
    parser.add_argument("--model-repeat", type=int, default=2)
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1066), metavar=("H", "W"))
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


def model_benchmark(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from densevit.data.collate import PaddedImages
    from densevit.detection.criterion import SetCriterion
    from densevit.models import create_model

    model = create_model("detr_r50", num_classes=91).to(device)
    criterion = SetCriterion(91, HungarianMatcher()).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    height, width = args.size
    images = torch.randn(args.model_batch, 3, height, width, device=device)
    batch = PaddedImages((images, torch.zeros(args.model_batch, height, width, dtype=torch.bool, device=device)))
    gen = torch.Generator().manual_seed(0)
    targets = [{"labels": torch.randint(0, 91, (8,), generator=gen).to(device),
                "boxes": (torch.rand(8, 4, generator=gen) * 0.4 + 0.2).to(device)} for _ in range(args.model_batch)]

    def train_step() -> None:
        loss = criterion(model(batch), targets)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()

    def infer() -> None:
        with torch.no_grad():
            model(batch)

    model.train()
    train_step()  # warm-up
    train_s, _ = timed(train_step, args.model_repeat)
    model.eval()
    infer()
    infer_s, _ = timed(infer, args.model_repeat)
    return {
        "setting": {"model": "detr_r50", "image_size": [height, width], "batch": args.model_batch, "device": str(device)},
        "train_images_per_second": round(args.model_batch / train_s, 3),
        "inference_images_per_second": round(args.model_batch / infer_s, 3),
        "peak_memory_mb": round(_peak_memory_mb(device), 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results: dict[str, Any] = {"matcher": matcher_benchmark(args, device)}
    if not args.skip_model:
        results["detr_r50"] = model_benchmark(args, device)
    return results
