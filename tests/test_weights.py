"""The one weights path: reading every file format, unwrapping, and loading with a report."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from densevit.errors import UserInputError
from densevit.models import create_model
from densevit.weights import (
    load_pretrained_model,
    load_state,
    read_weights,
    state_dict_of,
)


class TwoLayers(nn.Module):
    backbone_prefixes = ("body.",)
    classifier_prefixes = ("head.",)

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Linear(4, 5)
        self.head = nn.Linear(5, classes)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("wrap", [
    lambda s: s,
    lambda s: {"model": s, "epoch": 3},
    lambda s: {"state_dict": s},
    lambda s: {"state_dict_ema": s, "state_dict": {"x": torch.zeros(1)}},  # EMA wins, as published
    lambda s: {"ema": {"module": s, "updates": 10}},  # RT-DETR's layout
    lambda s: {f"module.{k}": v for k, v in s.items()},  # DistributedDataParallel
])
def test_wrappers_are_unwrapped(tmp_path, wrap):
    state = _state(TwoLayers())
    path = tmp_path / "w.pth"
    torch.save(wrap(state), path)
    found = state_dict_of(read_weights(path), path)
    assert found.keys() == state.keys() and all(torch.equal(found[k], state[k]) for k in state)


def test_safetensors_and_npz_are_read_as_tensors(tmp_path):
    state = _state(TwoLayers())
    save_file(state, tmp_path / "w.safetensors")
    read = read_weights(tmp_path / "w.safetensors")
    assert all(torch.equal(read[k], state[k]) for k in state)
    np.savez(tmp_path / "w.npz", **{"embedding/kernel": np.ones((2, 3), np.float32)})
    assert torch.equal(read_weights(tmp_path / "w.npz")["embedding/kernel"], torch.ones(2, 3))


@pytest.mark.parametrize(("name", "content", "message"), [
    ("text.pth", b"not a checkpoint", "truncated or corrupt"),
    ("bad.safetensors", b"\x00\x01", "not a valid .safetensors file"),
    ("bad.npz", b"PK\x03\x04junk", "not a valid .npz file"),
])
def test_unreadable_files_are_one_line_naming_the_file(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserInputError, match=f"{name}: cannot read weight file: .*{message}"):
        read_weights(tmp_path / name)
    with pytest.raises(UserInputError, match="absent.pth: weight file not found"):
        read_weights(tmp_path / "absent.pth")


def test_strict_loading_names_missing_unexpected_and_misshapen_tensors(tmp_path):
    model = TwoLayers()
    state = _state(model)
    del state["body.bias"]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(UserInputError, match=r"1 missing \(\[body\.bias\]\) and 1 unexpected tensors \(\[extra\.weight\]\)"):
        load_state(model, state, "f.pth")
    with pytest.raises(UserInputError, match=r"body\.weight: file \(5, 3\), model \(5, 4\)"):
        load_state(model, {**_state(model), "body.weight": torch.zeros(5, 3)}, "f.pth")
    report = load_state(model, state, "f.pth", strict=False)
    assert report.missing == ["body.bias"] and report.unexpected == ["extra.weight"]


def test_pretrained_whole_model_reinitialises_only_a_classifier_of_another_size(tmp_path):
    source = create_model("detr_tiny", num_classes=91)
    torch.save({"model": source.state_dict()}, tmp_path / "coco.pth")
    target = create_model("detr_tiny", num_classes=20)
    fresh_head = target.class_embed.weight.clone()
    with pytest.warns(UserWarning, match="class_embed.weight"):
        report = load_pretrained_model(target, tmp_path / "coco.pth")
    assert set(report.resized) == {"class_embed.weight", "class_embed.bias", "enc_class_embed.weight",
                                   "enc_class_embed.bias"}
    assert torch.equal(target.input_proj.weight, source.input_proj.weight)
    assert torch.equal(target.class_embed.weight, fresh_head)  # kept its own initialisation


def test_pretrained_file_of_the_backbone_goes_to_the_backbone(tmp_path):
    import torchvision

    resnet = torchvision.models.resnet18(weights=None)  # torchvision's own key layout, with its fc
    torch.save(resnet.state_dict(), tmp_path / "resnet18.pth")
    model = create_model("detr_r18", num_classes=3)
    load_pretrained_model(model, tmp_path / "resnet18.pth")
    assert torch.equal(model.backbone.body.layer3[0].conv1.weight, resnet.layer3[0].conv1.weight)


def test_pretrained_file_of_another_model_is_refused(tmp_path):
    torch.save({"decoder.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(UserInputError, match="other.pth: none of its keys belong to TwoLayers"):
        load_pretrained_model(TwoLayers(), tmp_path / "other.pth")
