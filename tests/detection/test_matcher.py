"""HungarianMatcher against a brute-force search, batched against per-image, and edge cases."""
from __future__ import annotations

import itertools

import pytest
import torch
from torchvision.ops import box_convert, generalized_box_iou

from densevit.detection.matcher import HungarianMatcher


def _random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    centre = torch.rand(n, 2, generator=generator) * 0.6 + 0.2
    size = torch.rand(n, 2, generator=generator) * 0.3 + 0.05
    return torch.cat([centre, size], dim=1)


def _outputs(batch: int, queries: int, classes: int, generator: torch.Generator) -> dict:
    return {
        "pred_logits": torch.randn(batch, queries, classes, generator=generator),
        "pred_boxes": torch.stack([_random_boxes(queries, generator) for _ in range(batch)]),
    }


def _targets(counts: list[int], classes: int, generator: torch.Generator) -> list[dict]:
    return [{"labels": torch.randint(0, classes, (n,), generator=generator), "boxes": _random_boxes(n, generator)}
            for n in counts]


def _reference_cost(logits, boxes, labels, target_boxes, sigmoid=False):
    """The DETR cost written out element by element (no torch.cdist, no batched indexing)."""
    q, n = logits.shape[0], len(labels)
    giou = generalized_box_iou(box_convert(boxes, "cxcywh", "xyxy"), box_convert(target_boxes, "cxcywh", "xyxy"))
    cost = torch.zeros(q, n, dtype=torch.float64)
    for i in range(q):
        prob = logits[i].sigmoid() if sigmoid else logits[i].softmax(-1)
        for j in range(n):
            p = prob[labels[j]].double()
            if sigmoid:
                cls = 0.25 * (1 - p) ** 2 * -torch.log(p + 1e-8) - 0.75 * p ** 2 * -torch.log(1 - p + 1e-8)
            else:
                cls = -p
            l1 = (boxes[i] - target_boxes[j]).abs().sum().double()
            cost[i, j] = 5 * l1 + cls - 2 * giou[i, j].double()
    return cost


def _brute_force_best(cost: torch.Tensor) -> float:
    """Lowest total cost over every injective assignment of targets (columns) to queries (rows)."""
    q, n = cost.shape
    return min(sum(cost[rows[j], j].item() for j in range(n)) for rows in itertools.permutations(range(q), n))


@pytest.mark.parametrize("classification", ["softmax", "sigmoid"])
def test_matches_brute_force_on_small_cases(classification):
    gen = torch.Generator().manual_seed(1)
    matcher = HungarianMatcher(classification=classification)
    for trial in range(6):
        queries = 6
        counts = [int(torch.randint(1, 5, (1,), generator=gen)), int(torch.randint(0, 4, (1,), generator=gen))]
        outputs = _outputs(2, queries, 4, gen)
        targets = _targets(counts, 4, gen)
        indices = matcher(outputs, targets)
        for b, (rows, cols) in enumerate(indices):
            n = counts[b]
            assert len(rows) == len(cols) == n
            assert len(set(rows.tolist())) == n and sorted(cols.tolist()) == list(range(n))
            if n == 0:
                continue
            cost = _reference_cost(outputs["pred_logits"][b], outputs["pred_boxes"][b],
                                   targets[b]["labels"], targets[b]["boxes"], classification == "sigmoid")
            ours = sum(cost[r, c].item() for r, c in zip(rows.tolist(), cols.tolist()))
            assert ours == pytest.approx(_brute_force_best(cost), abs=1e-5), (trial, b)


def test_batched_equals_per_image():
    gen = torch.Generator().manual_seed(2)
    matcher = HungarianMatcher()
    counts = [3, 0, 7, 1, 12]
    outputs = _outputs(len(counts), 20, 6, gen)
    targets = _targets(counts, 6, gen)
    batched = matcher(outputs, targets)
    for b in range(len(counts)):
        single = matcher({k: v[b: b + 1] for k, v in outputs.items()}, [targets[b]])[0]
        assert torch.equal(batched[b][0], single[0]) and torch.equal(batched[b][1], single[1])


def test_empty_targets_everywhere():
    gen = torch.Generator().manual_seed(3)
    outputs = _outputs(3, 5, 4, gen)
    indices = HungarianMatcher()(outputs, _targets([0, 0, 0], 4, gen))
    assert [(len(r), len(c)) for r, c in indices] == [(0, 0)] * 3
    assert all(r.dtype == torch.int64 and c.dtype == torch.int64 for r, c in indices)


def test_more_targets_than_queries_matches_every_query():
    gen = torch.Generator().manual_seed(4)
    outputs = _outputs(1, 3, 4, gen)
    rows, cols = HungarianMatcher()(outputs, _targets([5], 4, gen))[0]
    assert sorted(rows.tolist()) == [0, 1, 2] and len(set(cols.tolist())) == 3
