"""Loading weights from local files: our layout, the library's layout, and every error path."""
from __future__ import annotations

import copy
import logging

import pytest
import timm
import torch
from backbone_helpers import ALL_BACKBONES, by_size, image_batch, shared_backbone
from safetensors.torch import save_file

from densevit.backbones import create_backbone
from densevit.backbones.weights import load_pretrained
from densevit.errors import UserInputError


def save(state: dict, path) -> None:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)


@pytest.mark.parametrize("name", by_size(ALL_BACKBONES))
def test_round_trip_in_our_layout(name: str, tmp_path) -> None:
    source = shared_backbone(name)
    path = tmp_path / ("weights.safetensors" if name.startswith("vit") else "weights.pth")
    save(source.state_dict(), path)
    torch.manual_seed(123)  # a different initialisation, which the file must overwrite
    loaded = create_backbone(name, pretrained=path).eval()
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    images = image_batch(1, 32, 64)
    with torch.no_grad():
        for got, want in zip(loaded(images), source(images)):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def timm_map(model, images: torch.Tensor) -> torch.Tensor:
    """The last feature map of a timm classifier, [B, C, h, w], as its own code computes it."""
    features = model.forward_features(images)
    if features.dim() == 4 and features.shape[-1] == model.num_features:  # Swin: NHWC
        return features.permute(0, 3, 1, 2)
    if features.dim() == 4:  # ResNet: NCHW already
        return features
    batch, _, height, width = images.shape
    tokens = features[:, model.num_prefix_tokens :]
    return tokens.reshape(batch, height // 16, width // 16, -1).permute(0, 3, 1, 2)


@pytest.mark.parametrize(
    ("name", "timm_name", "timm_kwargs", "size", "suffix"),
    [
        ("vit_tiny_patch16", "vit_tiny_patch16_224", {"dynamic_img_size": True}, (32, 64), ".safetensors"),
        ("swin_tiny", "swin_tiny_patch4_window7_224", {}, (224, 224), ".pth"),
        ("tnt_small", "tnt_s_patch16_224", {}, (224, 224), ".pt"),
        ("resnet18", "resnet18", {}, (64, 96), ".pth"),
    ],
)
def test_timm_checkpoint_gives_timm_outputs(name, timm_name, timm_kwargs, size, suffix, tmp_path, caplog) -> None:
    reference = timm.create_model(timm_name, pretrained=False, **timm_kwargs).eval()  # with its classifier
    path = tmp_path / f"timm{suffix}"
    save(reference.state_dict(), path)
    with caplog.at_level(logging.WARNING, logger="densevit.weights"):
        backbone = create_backbone(name, pretrained=path).eval()
    assert caplog.records == []  # every tensor matched; the classifier is dropped silently
    images = image_batch(1, *size)
    with torch.no_grad():
        torch.testing.assert_close(backbone(images)[-1], timm_map(reference, images), rtol=1e-4, atol=1e-4)


def test_timm_hybrid_checkpoint_drops_the_class_token(tmp_path, caplog) -> None:
    # A one-block timm hybrid keeps the file small; its CNN, patch projection and class-token
    # position embedding are those of the full model.
    reference = timm.create_model("vit_base_r50_s16_224", pretrained=False, depth=1).eval()
    path = tmp_path / "hybrid.pth"
    torch.save({"state_dict": reference.state_dict()}, path)
    backbone = copy.deepcopy(shared_backbone("r50_vit_b16_timm"))  # building one anew costs seconds
    with caplog.at_level(logging.WARNING, logger="densevit.weights"):
        load_pretrained(backbone, path)
    torch.testing.assert_close(backbone.body.pos_embed, reference.pos_embed[:, 1:], rtol=0, atol=0)
    torch.testing.assert_close(backbone.body.blocks[0].mlp.fc2.weight, reference.blocks[0].mlp.fc2.weight)
    (warning,) = caplog.records
    assert "body.blocks.1.norm1.weight" in warning.getMessage() and "cls_token" not in warning.getMessage()
    images = image_batch(1, 32, 48)
    with torch.no_grad():
        skips = backbone(images)[:3]
        cnn = reference.patch_embed.backbone
        expected = cnn.forward_intermediates(images, indices=[0, 1, 2], intermediates_only=True)
    for got, want in zip(skips, expected):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("wrapper", ["model", "state_dict", "module."])
def test_wrapped_checkpoints_load(wrapper: str, tmp_path) -> None:
    state = shared_backbone("resnet18").state_dict()
    content = {f"module.{k}": v for k, v in state.items()} if wrapper == "module." else {wrapper: state, "epoch": 3}
    path = tmp_path / "wrapped.pth"
    torch.save(content, path)
    loaded = create_backbone("resnet18", pretrained=path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())


def test_partial_file_warns_with_the_missing_and_unexpected_keys(tmp_path, caplog) -> None:
    state = dict(shared_backbone("resnet18").state_dict())
    del state["body.layer4.1.conv2.weight"]
    state["body.extra.weight"] = torch.zeros(1)
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with caplog.at_level(logging.WARNING, logger="densevit.weights"):
        create_backbone("resnet18", pretrained=path)
    (record,) = caplog.records
    message = record.getMessage()
    assert str(path) in message and "body.layer4.1.conv2.weight" in message and "body.extra.weight" in message


def test_missing_file_names_the_path(tmp_path) -> None:
    path = tmp_path / "absent.pth"
    with pytest.raises(UserInputError, match="absent.pth: pretrained weights not found"):
        create_backbone("resnet18", pretrained=path)


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        ("garbage.pth", b"this is not a checkpoint", "cannot read pretrained weights"),
        ("garbage.safetensors", b"\x00\x01\x02", "cannot read pretrained weights"),
    ],
)
def test_unreadable_file_names_the_path(filename, content, message, tmp_path) -> None:
    path = tmp_path / filename
    path.write_bytes(content)
    with pytest.raises(UserInputError, match=f"{filename}: {message}"):
        create_backbone("resnet18", pretrained=path)


def test_file_without_a_state_dict_is_rejected(tmp_path) -> None:
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(UserInputError, match="list.pth: expected a state dict"):
        create_backbone("resnet18", pretrained=path)


def test_file_matching_no_key_is_an_error(tmp_path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"decoder.weight": torch.zeros(3), "decoder.bias": torch.zeros(3)}, path)
    with pytest.raises(UserInputError, match="other.pth: none of its 2 keys belong to ResNetBackbone"):
        create_backbone("resnet18", pretrained=path)


def test_wrong_shapes_are_an_error_and_name_the_tensor(tmp_path) -> None:
    path = tmp_path / "resnet50.pth"
    torch.save(shared_backbone("resnet18").state_dict(), path)
    message = r"resnet50.pth: \d+ tensors have the wrong shape .*body\.layer1\.0\.conv1\.weight"
    with pytest.raises(UserInputError, match=message):
        create_backbone("resnet50", pretrained=path)
