"""Pretrained weights by name (``timm:...``, ``hf-hub:...``), read from a Hugging Face cache that
each test writes in the hub's own layout, offline: nothing here may touch the network.

The names the shipped configs mention are checked against timm's list, and the state dicts
that timm builds for them are loaded through our key mapping into the backbones they are for.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import constants
from safetensors.torch import save_file
from timm.models import get_pretrained_cfg

from densevit.backbones import create_backbone
from densevit.backbones.weights import load_pretrained
from densevit.cli import main
from densevit.demos import demo_config_path
from densevit.demos.classify import generate_shape_folders
from densevit.errors import UserInputError
from densevit.models import create_model
from densevit.weights import load_pretrained_model

REPO = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_hub_file(cache: Path, repo_id: str, filename: str, state: dict[str, torch.Tensor]) -> Path:
    """``state`` as ``filename`` of ``repo_id`` in the hub cache layout: a snapshot folder per
    commit, and ``refs/main`` naming the commit."""
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    path = folder / "snapshots" / COMMIT / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    if filename.endswith(".safetensors"):
        save_file(state, path)
    else:
        torch.save(state, path)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(COMMIT)
    return path


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty hub cache, offline; a connection attempt from anywhere fails the test.

    huggingface_hub reads its environment once, at import, so its constants are set too.
    """
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def no_network(*args, **kwargs):
        raise AssertionError(f"a network connection was attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    return cache


def randomised(state: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    """Other values than any initialisation gives, so that equality shows a tensor was loaded."""
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) if v.is_floating_point() else v.clone() for k, v in state.items()}


def timm_state(name: str, seed: int = 1) -> dict[str, torch.Tensor]:
    """Random weights under the keys and shapes of timm's model ``name`` (built on meta: no init cost)."""
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) if v.is_floating_point() else torch.zeros(v.shape, dtype=v.dtype)
            for k, v in model.state_dict().items()}


def hub_repo_of(timm_name: str) -> str:
    return get_pretrained_cfg(timm_name).hf_hub_id


# --- a backbone and a whole model by name ------------------------------------------------------

TV_RESNET18 = "resnet18.tv_in1k"  # torchvision's ImageNet ResNet-18, as timm's hub holds it


@pytest.mark.parametrize("route", ["create_backbone", "model.pretrained", "backbone_pretrained"])
def test_timm_name_loads_the_cached_file_into_the_backbone(hub_cache, route):
    state = timm_state("resnet18")
    write_hub_file(hub_cache, hub_repo_of(TV_RESNET18), "model.safetensors", state)
    name = f"timm:{TV_RESNET18}"
    if route == "create_backbone":
        backbone = create_backbone("resnet18", pretrained=name)
    elif route == "model.pretrained":
        model = create_model("classifier_resnet18", num_classes=3)
        assert load_pretrained_model(model, name) is None  # not the model's keys: went to the backbone
        backbone = model.backbone
    else:
        model = create_model("classifier", num_classes=1000, backbone="resnet18", backbone_pretrained=name)
        backbone = model.backbone
        assert torch.equal(model.head.weight, state["fc.weight"])  # the classifier read the same file
    # torchvision's keys are ours under body., without the ImageNet classifier
    expected = {f"body.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    own = backbone.state_dict()
    assert own.keys() <= expected.keys()
    assert all(torch.equal(own[k], expected[k]) for k in own)


@pytest.mark.parametrize("filename", ["model.safetensors", "pytorch_model.bin"])
def test_hf_hub_name_loads_a_whole_model(hub_cache, filename):
    saved = randomised(create_model("detr_tiny", num_classes=3).state_dict())
    write_hub_file(hub_cache, "someone/detr-tiny-shapes", filename, saved)
    model = create_model("detr_tiny", num_classes=3)
    report = load_pretrained_model(model, "hf-hub:someone/detr-tiny-shapes")
    assert report is not None and not report.missing and not report.unexpected
    loaded = model.state_dict()
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)


def test_safetensors_comes_first_and_a_named_file_is_taken(hub_cache):
    first, second, named = (randomised(create_backbone("tiny_cnn").state_dict(), seed) for seed in (1, 2, 3))
    write_hub_file(hub_cache, "someone/tiny", "pytorch_model.bin", second)
    write_hub_file(hub_cache, "someone/tiny", "model.safetensors", first)
    write_hub_file(hub_cache, "someone/tiny", "ema/weights.pth", named)
    for name, expected in [("hf-hub:someone/tiny", first), ("hf-hub:someone/tiny/ema/weights.pth", named)]:
        backbone = create_backbone("tiny_cnn", pretrained=name)
        assert all(torch.equal(v, expected[k]) for k, v in backbone.state_dict().items()), name


def test_a_file_path_works_as_before(hub_cache, tmp_path):
    saved = randomised(create_backbone("tiny_cnn").state_dict())
    path = tmp_path / "weights" / "tiny.safetensors"
    path.parent.mkdir()
    save_file(saved, path)
    for given in (path, str(path)):
        backbone = create_backbone("tiny_cnn", pretrained=given)
        assert all(torch.equal(v, saved[k]) for k, v in backbone.state_dict().items())
    with pytest.raises(UserInputError, match="not found"):
        create_backbone("tiny_cnn", pretrained=tmp_path / "missing.pth")


def test_offline_without_the_file_is_one_line_naming_repo_file_and_cache(hub_cache):
    with pytest.raises(UserInputError) as err:
        create_backbone("resnet18", pretrained=f"timm:{TV_RESNET18}")
    message = str(err.value)
    assert "\n" not in message
    for part in (f"timm:{TV_RESNET18}", hub_repo_of(TV_RESNET18), "model.safetensors", str(hub_cache),
                 "HF_HUB_OFFLINE=1", "give its path"):
        assert part in message, (part, message)


@pytest.mark.parametrize("variable", ["HF_HUB_CACHE", "HF_HOME"])
def test_the_cache_is_where_the_environment_says(tmp_path, variable):
    """In a fresh process (huggingface_hub reads its environment at import), offline."""
    cache = tmp_path / "hub" if variable == "HF_HUB_CACHE" else tmp_path / "home" / "hub"
    path = write_hub_file(cache, "someone/tiny", "model.safetensors", {"w": torch.ones(2)})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update({variable: str(cache if variable == "HF_HUB_CACHE" else tmp_path / "home"), "HF_HUB_OFFLINE": "1"})
    code = "from densevit.hub_weights import resolve_weights; print(resolve_weights('hf-hub:someone/tiny'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=REPO)
    assert Path(out.stdout.strip()) == path


# --- the command line -----------------------------------------------------------------------------

def test_train_takes_a_name_in_set_model_pretrained(hub_cache, tmp_path, capsys):
    """``--set model.pretrained=hf-hub:...``: after one step at lr 1e-9 the parameters are the hub's."""
    data = tmp_path / "shapes"
    generate_shape_folders(data, {"train": 6, "val": 3})
    saved = randomised(create_model("classifier_tiny_cnn", num_classes=3).state_dict())
    write_hub_file(hub_cache, "someone/tiny-shapes", "model.safetensors", saved)
    sets = [f"data.root={data}", "model.pretrained=hf-hub:someone/tiny-shapes", "optim.lr=1.0e-9", "schedule.warmup_iters=0",
            "train.iters=1", "train.batch_size=3", "train.final_eval=skip", "train.progress=false",
            "train.plot_curves=false", "train.loggers=[jsonl]"]
    args = ["train", str(demo_config_path("classify")), "--out", str(tmp_path / "run"), "--device", "cpu"]
    assert main([*args, *(x for item in sets for x in ("--set", item))]) == 0, capsys.readouterr().err
    trained = torch.load(tmp_path / "run" / "last.pth", weights_only=True)["model"]
    names = [name for name, _ in create_model("classifier_tiny_cnn", num_classes=3).named_parameters()]
    assert names
    for k in names:  # the random weights differ from any initialisation by O(1); one step moves them ~1e-9
        torch.testing.assert_close(trained[k], saved[k], rtol=0, atol=1e-6)


# --- the names the shipped configs give -----------------------------------------------------------

# Each timm name the configs' comments give -> the registry backbone its weights are for.
CONFIG_NAMES = {
    "resnet50.tv_in1k": "resnet50",
    "resnet50d.ra2_in1k": "resnet50d",
    "vit_base_r50_s16_224.orig_in21k": "r50_vit_b16",
    "vit_base_patch16_224.orig_in21k": "vit_b16_transunet",
    "vit_small_patch16_224.augreg_in21k_ft_in1k": "vit_small_patch16",
    "swin_tiny_patch4_window7_224.ms_in1k": "swin_tiny",
}


def names_in_configs() -> set[str]:
    found = set()
    for path in (REPO / "configs").rglob("*.yaml"):
        for line in path.read_text().splitlines():
            comment = line.partition("#")[2]
            found |= set(re.findall(r"timm:([\w.]+\w)", comment))
    return found


def test_config_names_are_timm_pretrained_names():
    found = names_in_configs()
    assert found == set(CONFIG_NAMES)
    assert found <= set(timm.list_pretrained())


def _sized(timm_name: str, backbone: str):
    """ViT-B-sized pairs (about 10 s each on two cores) are left to the slow run."""
    big = backbone in ("r50_vit_b16", "vit_b16_transunet")
    return pytest.param(timm_name, backbone, marks=[pytest.mark.slow] if big else [], id=timm_name)


@pytest.mark.parametrize(("timm_name", "backbone"), [_sized(*pair) for pair in sorted(CONFIG_NAMES.items())])
def test_config_names_fill_every_tensor_of_their_backbone(hub_cache, timm_name, backbone):
    """timm's state dict for the name, through the cache and our key mapping: nothing left unfilled."""
    write_hub_file(hub_cache, hub_repo_of(timm_name), "model.safetensors", timm_state(timm_name))
    with torch.device("meta"):
        net = create_backbone(backbone)
    net = net.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in net.state_dict().values():
            tensor.fill_(float("nan") if tensor.is_floating_point() else -1)
    report = load_pretrained(net, f"timm:{timm_name}")
    assert not report.missing and not report.resized
    unfilled = [k for k, v in net.state_dict().items() if (v.isnan() if v.is_floating_point() else v == -1).any()]
    assert unfilled == []
