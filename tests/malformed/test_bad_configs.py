"""Malformed configs: each is refused when it is loaded, before anything is built, as one line
``densevit <cmd>: error: <file>: <yaml path>: ...`` and exit code 2.

Every case starts from a shipped demo config (through ``_base_`` with an absolute path) and
breaks one thing; the CLI runs in-process.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from densevit.cli import main
from densevit.config import build_config, load_config
from densevit.config_checks import (
    at_least,
    fraction,
    increasing,
    non_negative,
    positive,
    positive_size,
    probability,
)
from densevit.demos import demo_config_path
from densevit.errors import ConfigError
from densevit.model_checks import accepted_kwargs
from densevit.models import MODELS, list_models

TASKS = {"detect": "detection", "segment": "volume_segmentation", "classify": "classification"}


def write_config(tmp_path: Path, demo: str, text: str, name: str = "bad.yaml") -> Path:
    """A config file ``name`` in ``tmp_path``: the ``demo`` config with ``text`` over it."""
    path = tmp_path / name
    path.write_text(f"_base_: {demo_config_path(demo).resolve()}\n{text}")
    return path


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line of stderr, leaving out ``note:`` / ``warning:`` lines."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip() and ": note: " not in line and ": warning: " not in line]
    assert len(lines) == 1, err
    return lines[0]


def run_train(tmp_path: Path, config: Path, *sets: str) -> int:
    args = ["train", str(config), "--out", str(tmp_path / "run"), "--device", "cpu"]
    for item in sets:
        args += ["--set", item]
    return main(args)


def assert_nothing_built(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert not run.exists() or not list(run.rglob("*.pth")), sorted(run.rglob("*"))


# (demo config, YAML text over it, words the error line must hold besides the file name)
CASES = {
    # model
    "unknown model kwarg (detr)": ("detect", "model: {kwargs: {num_querys: 10}}",
                                   ["model.kwargs.num_querys", "did you mean num_queries"]),
    "unknown model kwarg (rtdetr)": ("detect", "model: {name: rtdetr_tiny, kwargs: {decoders: {num_layers: 2}}}",
                                     ["model.kwargs.decoders", "did you mean decoder"]),
    "unknown model kwarg (transunet)": ("segment", "model: {kwargs: {hiden: 32}}",
                                        ["model.kwargs.hiden", "did you mean hidden"]),
    "unknown model kwarg (classifier)": ("classify", "model: {kwargs: {drop_rat: 0.1}}",
                                         ["model.kwargs.drop_rat", "did you mean drop_rate"]),
    "num_classes in model kwargs": ("detect", "model: {kwargs: {num_classes: 3}}",
                                    ["model.kwargs.num_classes", "model.num_classes instead"]),
    "model kwarg of the wrong type": ("detect", "model: {kwargs: {hidden_dim: 12.5}}",
                                      ["model.kwargs.hidden_dim", "expected int, got float 12.5"]),
    "unknown model name": ("detect", "model: {name: detr_tinny}", ["model.name", "did you mean detr_tiny"]),
    "empty model name": ("classify", "model: {name: ''}", ["model.name", "required"]),
    "detection num_classes -3": ("detect", "model: {num_classes: -3}", ["model.num_classes", "got -3"]),
    "segmentation num_classes -3": ("segment", "model: {num_classes: -3}", ["model.num_classes", "at least 2"]),
    "segmentation num_classes 1": ("segment", "model: {num_classes: 1}", ["model.num_classes", "got 1"]),
    "classification num_classes -3": ("classify", "model: {num_classes: -3}", ["model.num_classes", "got -3"]),
    "classification num_classes 1": ("classify", "model: {num_classes: 1}", ["model.num_classes", "at least 2"]),
    # optim
    "negative lr": ("detect", "optim: {lr: -0.1}", ["optim.lr", "expected a positive number, got -0.1"]),
    "zero lr": ("segment", "optim: {lr: 0}", ["optim.lr", "got 0.0"]),
    "negative weight decay": ("detect", "optim: {weight_decay: -1e-4}", ["optim.weight_decay"]),
    "momentum 1": ("detect", "optim: {name: sgd, momentum: 1.0}", ["optim.momentum", "[0, 1)"]),
    "beta above 1": ("detect", "optim: {betas: [0.9, 1.5]}", ["optim.betas[1]"]),
    "negative backbone lr mult": ("detect", "optim: {backbone_lr_mult: -0.1}", ["optim.backbone_lr_mult"]),
    "layer decay 0": ("classify", "optim: {layer_decay: 0}", ["optim.layer_decay", "(0, 1]"]),
    # schedule
    "decreasing milestones": ("detect", "schedule: {name: step, milestones: [300, 200]}",
                              ["schedule.milestones", "increasing"]),
    "negative milestone epoch": ("detect", "schedule: {name: step, milestone_epochs: [-1, 4]}",
                                 ["schedule.milestone_epochs[0]"]),
    "milestones of a cosine schedule": ("detect", "schedule: {name: cosine, milestones: [10]}",
                                        ["schedule.milestones", "only used by schedule.name 'step'"]),
    "negative warm-up": ("detect", "schedule: {warmup_iters: -5}", ["schedule.warmup_iters"]),
    "warm-up factor above 1": ("detect", "schedule: {warmup_factor: 2}", ["schedule.warmup_factor"]),
    "gamma 0": ("detect", "schedule: {name: step, gamma: 0}", ["schedule.gamma"]),
    "negative power": ("segment", "schedule: {name: poly, power: -1}", ["schedule.power"]),
    "min_lr above lr": ("segment", "optim: {lr: 0.001}\nschedule: {name: cosine, min_lr: 0.01}",
                        ["schedule.min_lr", "above optim.lr"]),
    # train
    "batch size 0": ("detect", "train: {batch_size: 0}", ["train.batch_size", "got 0"]),
    "negative batch size": ("classify", "train: {batch_size: -2}", ["train.batch_size", "got -2"]),
    "epochs and iters": ("detect", "train: {epochs: 2, iters: 10}", ["train.epochs / train.iters"]),
    "negative epochs": ("detect", "train: {epochs: -1}", ["train.epochs"]),
    "negative clip": ("detect", "train: {clip_grad_norm: -1}", ["train.clip_grad_norm"]),
    "log_every 0": ("detect", "train: {log_every: 0}", ["train.log_every"]),
    "ema decay 1": ("detect", "train: {ema: {decay: 1.0}}", ["train.ema.decay"]),
    "epochs of the wrong type": ("detect", "train: {epochs: three}", ["train.epochs", "expected int, got str"]),
    # classification data and loss
    "bad hflip probability": ("classify", "data: {hflip: 1.5}", ["data.hflip", "probability"]),
    "bad random erasing probability": ("classify", "data: {re_prob: -0.5}", ["data.re_prob"]),
    "bad mixup probability": ("classify", "loss: {mixup_prob: 2}", ["loss.mixup_prob"]),
    "bad mixup switch probability": ("classify", "loss: {mixup_switch_prob: -1}", ["loss.mixup_switch_prob"]),
    "label smoothing 1": ("classify", "loss: {label_smoothing: 1.0}", ["loss.label_smoothing"]),
    "negative mixup alpha": ("classify", "loss: {mixup_alpha: -0.2}", ["loss.mixup_alpha"]),
    "classification img_size 0": ("classify", "data: {img_size: 0}", ["data.img_size", "positive integer"]),
    "classification crop_pct above 1": ("classify", "data: {crop_pct: 1.5}", ["data.crop_pct"]),
    "classification scale reversed": ("classify", "data: {scale: [0.9, 0.5]}", ["data.scale"]),
    "classification scale 0": ("classify", "data: {scale: [0.0, 1.0]}", ["data.scale[0]"]),
    "classification std 0": ("classify", "data: {std: [0.2, 0.0, 0.2]}", ["data.std[1]"]),
    "negative colour jitter": ("classify", "data: {color_jitter: -0.4}", ["data.color_jitter"]),
    "repeated class names": ("classify", "data: {class_names: [cat, dog, cat]}", ["data.class_names", "cat"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_is_one_line_before_anything_is_built(tmp_path, capsys, case):
    demo, text, words = CASES[case]
    config = write_config(tmp_path, demo, text)
    assert run_train(tmp_path, config) == 2
    line = error_line(capsys)
    assert line.startswith("densevit train: error: ")
    assert "bad.yaml" in line
    for word in words:
        assert word in line
    assert_nothing_built(tmp_path)


def test_the_shipped_demo_configs_pass(tmp_path):
    """The cases above fail for what they break, not for their base."""
    for demo, task in TASKS.items():
        cfg = load_config(write_config(tmp_path, demo, "seed: 1\n"))
        assert cfg.task == task


def test_bad_yaml_names_file_and_line(tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("task: detection\nmodel: {name: detr_tiny\ntrain: {epochs: 1}\n")
    assert run_train(tmp_path, config) == 2
    line = error_line(capsys)
    assert "broken.yaml" in line and "invalid YAML" in line and "line " in line
    assert_nothing_built(tmp_path)


def test_missing_base_names_file_and_key(tmp_path, capsys):
    config = tmp_path / "child.yaml"
    config.write_text("_base_: no_such_base.yaml\ntrain: {epochs: 1}\n")
    assert run_train(tmp_path, config) == 2
    line = error_line(capsys)
    assert "child.yaml" in line and "_base_" in line and "no_such_base.yaml" in line
    assert_nothing_built(tmp_path)


@pytest.mark.parametrize(
    ("sets", "words"),
    [
        (["optim.lr=-1"], ["optim.lr", "--set optim.lr=-1"]),
        (["train.iters=5", "train.batch_size=0"], ["train.batch_size", "--set train.batch_size=0"]),
        (["model.kwargs.num_querys=5"], ["model.kwargs.num_querys", "did you mean num_queries", "--set"]),
        (["data.hfilp=0.5"], ["data.hfilp", "--set data.hfilp=0.5"]),
        (["train.epochs=[1"], ["--set 'train.epochs=[1'", "not valid YAML"]),
    ],
)
def test_bad_set_override_names_the_override(tmp_path, capsys, sets, words):
    config = write_config(tmp_path, "detect", "seed: 3\n", name="good.yaml")
    assert run_train(tmp_path, config, *sets) == 2
    line = error_line(capsys)
    for word in words:
        assert word in line
    if "YAML" not in words[-1]:
        assert "good.yaml" in line  # the file too: its other values went into the config
    assert_nothing_built(tmp_path)


def test_evaluate_refuses_a_bad_config_before_reading_the_checkpoint(tmp_path, capsys):
    config = write_config(tmp_path, "detect", "optim: {lr: -0.1}\n")
    rc = main(["evaluate", str(config), "--checkpoint", str(tmp_path / "missing.pth"), "--device", "cpu"])
    assert rc == 2
    line = error_line(capsys)
    assert line.startswith("densevit evaluate: error: ") and "bad.yaml" in line and "optim.lr" in line
    assert "missing.pth" not in line


# ----------------------------------------------------------------------------- the checks' parts


def test_model_kwargs_are_worked_out_for_every_registered_model():
    """The signature check follows each built-in factory to the class it builds (a model whose
    ``**kwargs`` could not be followed would silently go unchecked)."""
    built_in = [name for name in list_models() if MODELS.get(name).__module__.startswith("densevit.")]
    assert len(built_in) > 40  # (other tests register models of their own: not these)
    for name in built_in:
        accepted = accepted_kwargs(name)
        assert accepted is not None, name
        assert "num_classes" not in accepted, name
    assert {"num_queries", "hidden_dim", "aux_loss", "backbone_pretrained"} <= set(accepted_kwargs("detr_tiny"))
    assert set(accepted_kwargs("rtdetr_r18")) == {"backbone_pretrained", "backbone_kwargs", "encoder", "decoder"}
    # the TransUNet encoder sizes are taken out of kwargs; the decoder's come from TransUNet
    assert {"img_size", "hidden", "decoder_channels", "in_chans"} <= set(accepted_kwargs("transunet_r50_vitb16"))
    assert "backbone_kwargs" not in accepted_kwargs("transunet_r50_vitb16")  # TransUNet would refuse it
    assert set(accepted_kwargs("classifier_tiny_cnn")) == {"backbone_pretrained", "backbone_kwargs", "drop_rate"}


def _opaque(num_classes, **kwargs):
    options = sorted(kwargs.items())  # a use of kwargs that cannot be followed
    return num_classes, options


def test_models_whose_kwargs_cannot_be_followed_are_not_checked():
    MODELS.register("malformed_test_opaque")(_opaque)
    MODELS.register("malformed_test_lambda")(lambda num_classes, **kw: num_classes)
    assert accepted_kwargs("malformed_test_opaque") is None
    assert accepted_kwargs("malformed_test_lambda") is None
    for name in ("malformed_test_opaque", "malformed_test_lambda"):
        cfg = build_config({"task": "detection", "model": {"name": name, "kwargs": {"anything": 1}}})
        assert cfg.model.kwargs == {"anything": 1}


def test_configs_without_a_training_length_still_load():
    """Converted checkpoints store configs without train.epochs / train.iters: predicting from
    them must work; only training needs the length (checked by the trainer)."""
    cfg = build_config({"task": "detection", "model": {"name": "detr_tiny", "num_classes": 3}})
    assert cfg.train.epochs == 0 and cfg.train.iters == 0
    with pytest.raises(ConfigError, match="train.epochs / train.iters"):
        cfg.train.check()


def test_train_length_is_checked_when_training(tmp_path, capsys):
    data = yaml.safe_load(demo_config_path("detect").read_text())
    data["train"].pop("epochs", None)
    data["train"].pop("iters", None)
    config = tmp_path / "nolength.yaml"
    config.write_text(yaml.safe_dump(data))
    assert run_train(tmp_path, config) == 2
    assert "train.epochs / train.iters" in error_line(capsys)
    assert_nothing_built(tmp_path)


@pytest.mark.parametrize(
    ("check", "good", "bad", "what"),
    [
        (positive, [1e-9, 3], [0, -1, float("nan"), True, "1"], "a positive number"),
        (non_negative, [0, 2.5], [-1e-9, float("nan"), None], "0 or more"),
        (probability, [0, 0.5, 1], [-0.1, 1.01], "a probability in [0, 1]"),
        (fraction, [1e-6, 1], [0, 1.5], "a value in (0, 1]"),
        (lambda v, k: at_least(v, k, 2), [2, 7], [1, -3], "2 or more"),
        (increasing, [[], [0], [1, 5, 9]], [[3, 3], [5, 1], [1, "x"]], "increasing values"),
        (positive_size, [1, [32, 48], (7,)], [0, [32, 0], [], 2.0, [True]], "positive integer"),
    ],
)
def test_check_helpers(check, good, bad, what):
    for value in good:
        check(value, "sec.key")
    for value in bad:
        with pytest.raises(ConfigError) as info:
            check(value, "sec.key")
        message = str(info.value)
        assert message.startswith("sec.key") and ": expected " in message, message
        if not (check is increasing and value == [1, "x"]) and not (check is positive_size and value == []):
            assert what in message, message
