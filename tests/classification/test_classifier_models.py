"""Classifiers against the library models they wrap: with the ImageNet head of a timm /
torchvision weight file loaded, the logits are the library's own."""
from __future__ import annotations

import pytest
import timm
import torch
import torchvision

from densevit.errors import InputNote
from densevit.models import create_model


def _saved(module: torch.nn.Module, tmp_path, name: str) -> str:
    path = tmp_path / f"{name}.pth"
    torch.save(module.state_dict(), path)
    return str(path)


@pytest.mark.parametrize("model_name, timm_name", [
    ("classifier_vit_tiny", "vit_tiny_patch16_224"),
    ("classifier_swin_tiny", "swin_tiny_patch4_window7_224"),
    ("classifier_tnt_small", "tnt_s_patch16_224"),
])
def test_a_timm_imagenet_file_predicts_what_timm_predicts(model_name, timm_name, tmp_path):
    reference = timm.create_model(timm_name, pretrained=False).eval()
    with torch.no_grad():  # a non-zero head: timm starts ViT heads at zero
        reference.get_classifier().weight.normal_(0, 0.02)
        reference.get_classifier().bias.normal_(0, 0.02)
    model = create_model(model_name, num_classes=1000, backbone_pretrained=_saved(reference, tmp_path, timm_name)).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected, got = reference(x), model(x)
    assert got.shape == (2, 1000)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_a_torchvision_resnet_file_predicts_what_torchvision_predicts(tmp_path):
    reference = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    model = create_model("classifier_resnet18", num_classes=1000,
                         backbone_pretrained=_saved(reference, tmp_path, "resnet18")).eval()
    x = torch.randn(2, 3, 160, 192)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-4)


def test_another_class_count_keeps_a_fresh_head_with_a_note(tmp_path):
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    path = _saved(reference, tmp_path, "vit")
    with pytest.warns(InputNote, match="1000 classes, the model 7: the head starts fresh"):
        model = create_model("classifier_vit_tiny", num_classes=7, backbone_pretrained=path)
    # the backbone did load: the class token is the file's
    torch.testing.assert_close(model.backbone.body.cls_token, reference.cls_token)
    assert model(torch.zeros(1, 3, 96, 128)).shape == (1, 7)  # any size the patch divides


def test_the_generic_classifier_takes_a_backbone_by_name():
    model = create_model("classifier", num_classes=3, backbone="tiny_cnn")
    assert model(torch.zeros(2, 3, 64, 48)).shape == (2, 3)
    with pytest.raises(Exception, match="model.kwargs.backbone: required"):
        create_model("classifier", num_classes=3)


def test_vit_layers_are_numbered_as_beit_does():
    with torch.device("meta"):
        model = create_model("classifier_vit_tiny", num_classes=5)
    assert model.num_layers == 14  # stem, 12 blocks, norm + head
    ids = {name: model.layer_id(name) for name, _ in model.named_parameters()}
    assert ids["backbone.body.cls_token"] == ids["backbone.body.pos_embed"] == ids["backbone.body.patch_embed.proj.weight"] == 0
    assert ids["backbone.body.blocks.0.attn.qkv.weight"] == 1 and ids["backbone.body.blocks.11.mlp.fc2.bias"] == 12
    assert ids["backbone.body.norm.weight"] == ids["head.weight"] == 13


def test_swin_layers_count_blocks_across_stages():
    with torch.device("meta"):
        model = create_model("classifier_swin_tiny", num_classes=5)
    assert model.num_layers == 2 + 2 + 6 + 2 + 2
    assert model.layer_id("backbone.body.layers.0.blocks.0.norm1.weight") == 1
    assert model.layer_id("backbone.body.layers.2.downsample.reduction.weight") == 5  # stage 2 starts at block 4
    assert model.layer_id("backbone.body.layers.3.blocks.1.mlp.fc1.weight") == 12
    assert model.layer_id("backbone.body.norm.weight") == model.layer_id("head.bias") == 13


def test_an_official_cswin_file_predicts_what_the_official_classifier_predicts(tmp_path):
    """The CSWin backbone with its official head (checked against the official module in
    tests/backbones) is the reference: the classifier must load the head and give its logits."""
    from densevit.backbones import create_backbone

    torch.manual_seed(0)
    official = create_backbone("cswin_tiny", num_classes=1000).eval()
    path = tmp_path / "cswin_tiny_224.pth"
    torch.save({"state_dict_ema": official.state_dict()}, path)
    model = create_model("classifier_cswin_tiny", num_classes=1000, backbone_pretrained=str(path)).eval()
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(images), official.classify(images), rtol=0, atol=1e-5)


def test_cswin_layers_count_blocks_across_stages():
    with torch.device("meta"):
        model = create_model("classifier_cswin_tiny", num_classes=5)
    assert model.num_layers == 2 + 1 + 2 + 21 + 1  # depths 1, 2, 21, 1
    assert model.layer_id("backbone.stage1_conv_embed.0.weight") == 0
    assert model.layer_id("backbone.stage1.0.qkv.weight") == 1
    assert model.layer_id("backbone.merge1.conv.weight") == model.layer_id("backbone.stage2.0.qkv.weight") == 2
    assert model.layer_id("backbone.stage3.20.mlp.fc2.bias") == 24
    assert model.layer_id("backbone.merge3.norm.weight") == model.layer_id("backbone.stage4.0.norm1.weight") == 25
    assert model.layer_id("backbone.norm.weight") == model.layer_id("head.bias") == 26
