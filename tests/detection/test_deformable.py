"""Multi-scale deformable attention against a loop of bilinear lookups, gradcheck, dtypes, compile, ONNX."""
from __future__ import annotations

import math

import pytest
import torch

from densevit.detection.deformable import MSDeformableAttention, deformable_sample

SHAPES = [(5, 7), (3, 4), (2, 2)]
POINTS = [3, 2, 1]


def bilinear(image: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """image [D,h,w] at (x, y) in [0,1] map coordinates (pixel centres at (i+0.5)/w), zeros outside."""
    _, h, w = image.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    total = torch.zeros(image.shape[0], dtype=image.dtype)
    for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
        weight = (1 - abs(px - xi)) * (1 - abs(py - yi))
        if 0 <= xi < w and 0 <= yi < h:
            total = total + weight * image[:, yi, xi]
    return total


def brute_force(value, shapes, locations, weights, points):
    batch, _, heads, dim = value.shape
    queries = locations.shape[1]
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    level_of = [lvl for lvl, n in enumerate(points) for _ in range(n)]
    out = torch.zeros(batch, queries, heads * dim, dtype=value.dtype)
    for b in range(batch):
        for q in range(queries):
            for m in range(heads):
                acc = torch.zeros(dim, dtype=value.dtype)
                for p, lvl in enumerate(level_of):
                    h, w = shapes[lvl]
                    image = value[b, starts[lvl]:starts[lvl + 1], m].T.reshape(dim, h, w)
                    x, y = locations[b, q, m, p].tolist()
                    acc = acc + weights[b, q, m, p] * bilinear(image, x, y)
                out[b, q, m * dim:(m + 1) * dim] = acc
    return out


def random_inputs(dtype=torch.float64, batch=2, queries=3, heads=2, dim=4):
    gen = torch.Generator().manual_seed(0)
    tokens = sum(h * w for h, w in SHAPES)
    value = torch.randn(batch, tokens, heads, dim, generator=gen, dtype=dtype)
    # some points outside the map, to check the zero padding
    locations = torch.rand(batch, queries, heads, sum(POINTS), 2, generator=gen, dtype=dtype) * 1.4 - 0.2
    weights = torch.rand(batch, queries, heads, sum(POINTS), generator=gen, dtype=dtype)
    return value, locations, weights


def test_sampling_equals_a_loop_of_bilinear_lookups():
    value, locations, weights = random_inputs()
    got = deformable_sample(value, SHAPES, locations, weights, POINTS)
    torch.testing.assert_close(got, brute_force(value, SHAPES, locations, weights, POINTS), rtol=1e-10, atol=1e-12)


def test_gradients_of_the_sampling_pass_gradcheck():
    value, locations, weights = random_inputs(batch=1, queries=2)
    # away from pixel centres and edges, where bilinear sampling is not differentiable
    locations = (locations.clamp(0.05, 0.95) + 0.013).requires_grad_()
    torch.autograd.gradcheck(lambda v, loc, wt: deformable_sample(v, SHAPES, loc, wt, POINTS),
                             (value.requires_grad_(), locations, weights.requires_grad_()))


def _module_inputs(dtype=torch.float32, batch=2, queries=5, dim=16):
    gen = torch.Generator().manual_seed(1)
    tokens = sum(h * w for h, w in SHAPES)
    query = torch.randn(batch, queries, dim, generator=gen, dtype=dtype)
    value = torch.randn(batch, tokens, dim, generator=gen, dtype=dtype)
    boxes = torch.cat([torch.rand(batch, queries, 1, 2, generator=gen), torch.rand(batch, queries, 1, 2, generator=gen) * 0.5
                       + 0.1], -1).to(dtype)
    return query, boxes, value


def _randomised(module: torch.nn.Module) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return module


def test_box_references_place_points_by_the_box_size_and_the_level_point_count():
    attention = _randomised(MSDeformableAttention(16, num_heads=2, num_points=POINTS, num_levels=3)).double()
    query, boxes, value = _module_inputs(torch.float64)
    out = attention(query, boxes, value, SHAPES)
    # the same computation spelled out: offsets / P_l * box size * 0.5 around the centre
    batch, queries, _ = query.shape
    offsets = attention.sampling_offsets(query).reshape(batch, queries, 2, sum(POINTS), 2)
    # 1 / P_l as a float32 buffer, as RT-DETRv2 keeps it (so float64 runs match its module)
    scale = torch.tensor([1 / n for n in POINTS for _ in range(n)], dtype=torch.float32).double()[:, None]
    locations = boxes[:, :, None, :, :2] + offsets * scale * boxes[:, :, None, :, 2:] * 0.5
    weights = attention.attention_weights(query).reshape(batch, queries, 2, sum(POINTS)).softmax(-1)
    values = attention.value_proj(value).reshape(batch, -1, 2, 8)
    expected = attention.output_proj(brute_force(values, SHAPES, locations, weights, POINTS))
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def test_padding_tokens_masked_out_of_the_values_do_not_matter():
    attention = _randomised(MSDeformableAttention(16, num_heads=2, num_points=2, num_levels=3))
    query, boxes, value = _module_inputs()
    mask = torch.ones(value.shape[:2], dtype=torch.bool)
    mask[:, 3:9] = False
    changed = value.clone()
    changed[:, 3:9] = 100.0
    torch.testing.assert_close(attention(query, boxes, value, SHAPES, mask), attention(query, boxes, changed, SHAPES, mask))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_runs_under_autocast(dtype):
    attention = _randomised(MSDeformableAttention(16, num_heads=2, num_points=POINTS, num_levels=3))
    query, boxes, value = _module_inputs()
    exact = attention(query, boxes, value, SHAPES)
    with torch.autocast("cpu", dtype=dtype):
        low = attention(query, boxes, value, SHAPES)
    assert low.dtype == dtype and torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), exact, rtol=0.1, atol=0.1)


@pytest.mark.slow
def test_compiles_and_exports_to_onnx(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    attention = _randomised(MSDeformableAttention(16, num_heads=2, num_points=POINTS, num_levels=3)).eval()
    query, boxes, value = _module_inputs()
    expected = attention(query, boxes, value, SHAPES)
    compiled = torch.compile(attention)
    torch.testing.assert_close(compiled(query, boxes, value, SHAPES), expected, rtol=1e-5, atol=1e-5)

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = attention

        def forward(self, query, boxes, value):
            return self.attention(query, boxes, value, SHAPES)

    path = tmp_path / "attention.onnx"
    torch.onnx.export(Graph(), (query, boxes, value), str(path), dynamo=True, external_data=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = dict(zip([i.name for i in session.get_inputs()], (query.numpy(), boxes.numpy(), value.numpy())))
    torch.testing.assert_close(torch.from_numpy(session.run(None, feeds)[0]), expected, rtol=1e-5, atol=1e-5)
