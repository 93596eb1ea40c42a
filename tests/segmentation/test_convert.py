"""TransUNet weight conversion against an independent re-implementation of the reference model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from reference_transunet import VisionTransformer

from densevit.convert import load_converters
from densevit.convert.transunet import reference_to_densevit
from densevit.engine.build import build_from_checkpoint
from densevit.errors import UserInputError
from densevit.models import create_model
from densevit.weights import load_pretrained_model

SMALL = dict(img_size=64, hidden=128, heads=2, mlp_dim=256, layers=2, block_units=(1, 2, 1), width_factor=0.5,
             decoder_channels=(64, 32, 16, 16))


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights everywhere, BatchNorm statistics included, so no term can hide."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                values = torch.randn(tensor.shape, generator=gen) * 0.2
                tensor.copy_(values.abs() + 0.5 if name.endswith("running_var") else values)
    return model.eval()


@pytest.mark.parametrize("hybrid, n_skip", [(True, 3), (True, 1), (False, 0)])
def test_converted_checkpoint_gives_reference_outputs(tmp_path, hybrid, n_skip):
    reference = _randomised(VisionTransformer(num_classes=5, hybrid=hybrid, n_skip=n_skip, **SMALL))
    src, dst = tmp_path / "reference.pth", tmp_path / "ours.pth"
    torch.save(reference.state_dict(), src)

    report = load_converters().build("transunet", src, dst)
    assert str(dst) in report
    task, model = build_from_checkpoint(dst)

    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference(x)
        got = model(x)
    assert got.shape == expected.shape == (2, 5, 64, 64)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    grey = torch.randn(1, 1, 64, 64)  # the reference repeats one channel to three; so do we
    with torch.no_grad():
        torch.testing.assert_close(model(grey), reference(grey), atol=1e-4, rtol=1e-4)


def _google_npz(hidden: int, mlp: int, layers: int, heads: int, grid: int, width: int, units: tuple[int, ...]) -> dict:
    """Random arrays with the names and shapes of Google's R50+ViT .npz files."""
    rng = np.random.default_rng(0)
    r = lambda *shape: (rng.standard_normal(shape) * 0.2).astype(np.float32)  # noqa: E731
    w = {
        "embedding/kernel": r(1, 1, width * 16, hidden),
        "embedding/bias": r(hidden),
        "Transformer/posembed_input/pos_embedding": r(1, 1 + grid * grid, hidden),
        "Transformer/encoder_norm/scale": r(hidden),
        "Transformer/encoder_norm/bias": r(hidden),
        "conv_root/kernel": r(7, 7, 3, width),
        "gn_root/scale": r(width),
        "gn_root/bias": r(width),
        "head/kernel": r(hidden, 10),  # ignored, as by the reference
    }
    for n in range(layers):
        p = f"Transformer/encoderblock_{n}/"
        for part in ("query", "key", "value"):
            w[p + f"MultiHeadDotProductAttention_1/{part}/kernel"] = r(hidden, heads, hidden // heads)
            w[p + f"MultiHeadDotProductAttention_1/{part}/bias"] = r(heads, hidden // heads)
        w[p + "MultiHeadDotProductAttention_1/out/kernel"] = r(heads, hidden // heads, hidden)
        w[p + "MultiHeadDotProductAttention_1/out/bias"] = r(hidden)
        w[p + "MlpBlock_3/Dense_0/kernel"], w[p + "MlpBlock_3/Dense_0/bias"] = r(hidden, mlp), r(mlp)
        w[p + "MlpBlock_3/Dense_1/kernel"], w[p + "MlpBlock_3/Dense_1/bias"] = r(mlp, hidden), r(hidden)
        for norm in ("LayerNorm_0", "LayerNorm_2"):
            w[p + f"{norm}/scale"], w[p + f"{norm}/bias"] = r(hidden), r(hidden)
    cin = width
    for b, count in enumerate(units, start=1):
        cmid, cout = width * 2 ** (b - 1), width * 4 * 2 ** (b - 1)
        for u in range(1, count + 1):
            p = f"block{b}/unit{u}/"
            w[p + "conv1/kernel"], w[p + "conv2/kernel"], w[p + "conv3/kernel"] = r(1, 1, cin, cmid), r(3, 3, cmid, cmid), r(1, 1, cmid, cout)
            for i, c in ((1, cmid), (2, cmid), (3, cout)):
                w[p + f"gn{i}/scale"], w[p + f"gn{i}/bias"] = r(1, 1, 1, c), r(1, 1, 1, c)
            if u == 1:
                w[p + "conv_proj/kernel"] = r(1, 1, cin, cout)
                w[p + "gn_proj/scale"], w[p + "gn_proj/bias"] = r(1, 1, 1, cout), r(1, 1, 1, cout)
            cin = cout
    return w


@pytest.mark.parametrize("route", ["model_pretrained", "backbone_pretrained"])
def test_google_npz_loads_as_the_reference_loads_it(tmp_path, route):
    """A Google ``.npz`` gives the reference's outputs, loaded directly or through the backbone registry."""
    weights = _google_npz(hidden=128, mlp=256, layers=2, heads=2, grid=4, width=32, units=(1, 2, 1))
    path = tmp_path / "R50+ViT-B_16.npz"
    np.savez(path, **weights)

    reference = _randomised(VisionTransformer(num_classes=3, **SMALL))
    reference.load_from(weights)
    extra = {"backbone_pretrained": str(path)} if route == "backbone_pretrained" else {}
    model = create_model(
        "transunet_r50_vitb16", num_classes=3, img_size=[64, 64], hidden=128, depth=2, num_heads=2, mlp_dim=256,
        resnet_layers=[1, 2, 1], resnet_width=32, decoder_channels=[64, 32, 16, 16], **extra,
    ).eval()
    if route == "model_pretrained":
        assert load_pretrained_model(model, path) is None  # went to the encoder
    # decoder and head are not in the .npz: give ours the reference's so that whole outputs compare
    decoder = {k: v for k, v in reference_to_densevit(reference.state_dict()).items() if not k.startswith("encoder.")}
    model.load_state_dict(decoder, strict=False)

    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-4, rtol=1e-4)


def test_npz_grid_is_resized_and_mismatches_are_named(tmp_path):
    weights = _google_npz(hidden=64, mlp=64, layers=1, heads=1, grid=14, width=32, units=(1, 1, 1))
    path = tmp_path / "w.npz"
    np.savez(path, **weights)
    model = create_model("transunet_r50_vitb16", num_classes=2, img_size=[64, 96], hidden=64, depth=1, num_heads=1,
                         mlp_dim=64, resnet_layers=[1, 1, 1], resnet_width=32)
    model.encoder.load_weights_file(path)
    assert model.encoder.pos_embed.shape == (1, 4 * 6, 64)
    wrong = create_model("transunet_r50_vitb16", num_classes=2, img_size=[64, 64], hidden=64, depth=1, num_heads=1,
                         mlp_dim=128, resnet_layers=[1, 1, 1], resnet_width=32)
    with pytest.raises(UserInputError, match=r"wrong shape.*mlp\.fc1\.weight"):
        wrong.encoder.load_weights_file(path)


def test_foreign_checkpoint_is_refused(tmp_path):
    src = tmp_path / "other.pth"
    torch.save({"backbone.conv1.weight": torch.zeros(1)}, src)
    with pytest.raises(UserInputError, match="backbone.conv1.weight"):
        load_converters().build("transunet", src, tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()
