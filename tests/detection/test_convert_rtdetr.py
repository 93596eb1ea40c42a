"""``rtdetr-official`` conversion: released RT-DETRv2 files give our RT-DETR the original's outputs.

The oracle is ``reference_rtdetr``, a compact re-implementation of the official module whose
``state_dict`` has the official keys, buffers and checkpoint layout. Outputs are compared in
float64: with random weights, float32 rounding alone can swap near-tied queries in the top-300.
"""
from __future__ import annotations

import pytest
import torch
from reference_rtdetr import build_reference, randomize_, released_checkpoint

from densevit.cli import main
from densevit.convert.rtdetr import convert_rtdetr_official, convert_state
from densevit.engine.build import build_from_checkpoint
from densevit.errors import UserInputError
from densevit.models import create_model


def _released_file(tmp_path, depth, num_classes=80, layout="ema"):
    """A random official model (640x640 buffers, as released) and its file in the given layout."""
    ref = randomize_(build_reference(depth, num_classes, eval_spatial_size=(640, 640)), seed=depth).eval()
    src = tmp_path / f"rtdetrv2_r{depth}vd.pth"
    checkpoint = released_checkpoint(ref) if layout == "ema" else {"model": ref.state_dict(), "last_epoch": 3}
    torch.save(checkpoint, src)
    return ref, src


def _compare(ref, ours, height, width, seed=0):
    images = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch.no_grad():
        expected = ref(images)
        got = ours(images)
    assert got["pred_logits"].shape == expected["pred_logits"].shape
    torch.testing.assert_close(got["pred_logits"], expected["pred_logits"], atol=1e-4, rtol=0)
    torch.testing.assert_close(got["pred_boxes"], expected["pred_boxes"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_every_official_tensor_finds_its_place(depth):
    with torch.device("meta"):
        official = build_reference(depth, eval_spatial_size=(640, 640)).state_dict()
        ours = create_model(f"rtdetr_r{depth}", num_classes=80).state_dict()
    converted = convert_state(official)
    assert set(converted) == set(ours)
    for key, tensor in converted.items():
        assert tensor.shape == ours[key].shape, key


def test_released_r18_gives_the_same_outputs_square_and_non_square(tmp_path):
    ref, src = _released_file(tmp_path, 18)
    report = main(["convert", "rtdetr-official", str(src), str(tmp_path / "ours.pth")])
    assert report == 0
    task, ours = build_from_checkpoint(tmp_path / "ours.pth")
    cfg = task.cfg
    assert cfg.model.name == "rtdetr_r18" and len(cfg.data.class_names) == 80
    assert cfg.data.class_names[0] == "person" and cfg.data.category_ids[:3] == [1, 2, 3]
    ref, ours = ref.double(), ours.double().eval()
    _compare(ref, ours, 640, 640)
    # other sizes: the original computes its anchors per input when built without a fixed size
    free = build_reference(18, eval_spatial_size=None).double().eval()
    free.load_state_dict({k: v for k, v in ref.state_dict().items() if k not in ("decoder.anchors", "decoder.valid_mask")})
    _compare(free, ours, 480, 640, seed=1)
    _compare(free, ours, 352, 224, seed=2)


@pytest.mark.slow
def test_released_r50_model_layout_gives_the_same_outputs(tmp_path):
    ref, src = _released_file(tmp_path, 50, num_classes=3, layout="model")  # frozen norms, a user's 3 classes
    report = convert_rtdetr_official(src, tmp_path / "ours.pth")
    assert "rtdetr_r50" in report and "3 classes" in report
    task, ours = build_from_checkpoint(tmp_path / "ours.pth")
    cfg = task.cfg
    assert cfg.data.class_names in ([], None)  # not COCO: no names invented
    _compare(ref.double(), ours.double().eval(), 640, 640)


def test_a_wrong_file_is_refused_naming_keys_and_file_and_nothing_is_written(tmp_path):
    ref = build_reference(18)
    state = ref.state_dict()
    state["decoder.extra_head.weight"] = torch.zeros(3)
    del state["encoder.lateral_convs.0.conv.weight"]
    src = tmp_path / "patched.pth"
    torch.save({"ema": {"module": state, "updates": 1}}, src)
    with pytest.raises(UserInputError) as error:
        convert_rtdetr_official(src, tmp_path / "ours.pth")
    message = str(error.value)
    assert str(src) in message and "extra_head" in message and "lateral_convs.0" in message
    assert "\n" not in message.strip()
    assert not (tmp_path / "ours.pth").exists()

    detr_like = tmp_path / "detr.pth"
    torch.save({"model": {"backbone.0.body.conv1.weight": torch.zeros(64, 3, 7, 7)}}, detr_like)
    with pytest.raises(UserInputError, match="not RT-DETRv2"):
        convert_rtdetr_official(detr_like, tmp_path / "ours.pth")
    assert main(["convert", "rtdetr-official", str(detr_like), str(tmp_path / "ours.pth")]) != 0
    assert not (tmp_path / "ours.pth").exists()
