"""Config loading: bases, overrides, type checks, and every error path with its YAML path."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from densevit.config import ExperimentConfig, apply_overrides, build_config, load_config
from densevit.engine.task import TASKS, Task
from densevit.errors import ConfigError
from densevit.io import load_yaml


@dataclass
class _ToyData:
    root: str = ""
    crop: tuple[int, int] = (32, 32)
    classes: list[str] = field(default_factory=list)


@dataclass
class _ToyLoss:
    ce_weight: float = 1.0


@TASKS.register("config_test_task")
class _ConfigTestTask(Task):  # only its config sections are used here
    data_config = _ToyData
    loss_config = _ToyLoss


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_full_config_is_typed(tmp_path: Path) -> None:
    cfg_path = write(
        tmp_path / "exp.yaml",
        """
task: config_test_task
seed: 7
model: {name: toy, num_classes: 3, kwargs: {depth: 2}}
data: {root: /data, crop: [64, 96], classes: [a, b, c]}
loss: {ce_weight: 2}
optim: {name: sgd, lr: 0.01}
train: {epochs: 3, precision: fp32}
""",
    )
    cfg = load_config(cfg_path)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.seed == 7 and cfg.model.num_classes == 3 and cfg.model.kwargs == {"depth": 2}
    assert cfg.data == _ToyData(root="/data", crop=(64, 96), classes=["a", "b", "c"])
    assert cfg.loss.ce_weight == 2.0 and isinstance(cfg.loss.ce_weight, float)
    assert cfg.optim.name == "sgd" and cfg.optim.lr == 0.01
    assert cfg.train.epochs == 3
    # defaults fill what the file leaves out
    assert cfg.optim.weight_decay == ExperimentConfig().optim.weight_decay
    # the plain dict round-trips to the same typed config (what checkpoints rely on)
    assert build_config(cfg.to_dict()) == cfg


def test_base_chain_and_overrides(tmp_path: Path) -> None:
    write(tmp_path / "root.yaml", "task: config_test_task\ntrain: {epochs: 10, batch_size: 4}\nseed: 1\n")
    write(tmp_path / "mid.yaml", "_base_: root.yaml\ntrain: {epochs: 20}\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    leaf = write(sub / "leaf.yaml", "_base_: ../mid.yaml\nseed: 3\n")
    cfg = load_config(leaf, ["train.batch_size=8", "model.pretrained=null", "data.crop=[16, 24]"])
    assert cfg.train.epochs == 20  # from mid, over root
    assert cfg.train.batch_size == 8  # override over root
    assert cfg.seed == 3
    assert cfg.model.pretrained is None
    assert cfg.data.crop == (16, 24)


def test_overrides_do_not_edit_the_input() -> None:
    original = {"train": {"epochs": 1}}
    updated = apply_overrides(original, ["train.epochs=5"])
    assert original == {"train": {"epochs": 1}} and updated == {"train": {"epochs": 5}}


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("task: config_test_task\ntrain: {epochs: 3, epoch: 2}\n", [], "unknown key 'train.epoch'"),
        ("task: config_test_task\nbogus: 1\n", [], "unknown key 'bogus'"),
        ("task: config_test_task\ndata: {crop: [1, 2, 3]}\n", [], "data.crop: expected 2 values"),
        ("task: config_test_task\ntrain: {epochs: three}\n", [], "train.epochs: expected int, got str 'three'"),
        ("task: config_test_task\ntrain: {epochs: 2.5}\n", [], "train.epochs: expected int"),
        ("task: config_test_task\ntrain: {compile: 1}\n", [], "train.compile: expected bool"),
        ("task: config_test_task\noptim: {name: adam}\n", [], "optim.name: expected one of"),
        ("task: config_test_task\ndata: {classes: [a, 2]}\n", [], "data.classes[1]: expected str"),
        ("task: config_test_task\nmodel: 3\n", [], "model: expected a mapping"),
        ("task: config_test_task\n", ["train.epochs=x"], "train.epochs: expected int"),
        ("task: config_test_task\n", ["train.nonexistent=1"], "unknown key 'train.nonexistent'"),
        ("task: config_test_task\nseed: 1\n", ["seed.x=1"], "'seed' is a value, not a section"),
        ("task: config_test_task\n", ["seed.x=1"], "seed: expected int, got dict"),
        ("task: config_test_task\n", ["no_equals_sign"], "expected KEY=VALUE"),
        ("task: config_tst_task\n", [], "did you mean config_test_task"),
        ("seed: 1\n", [], "task: required"),
        ("- a list\n", [], "expected a mapping at the top level"),
        ("task: [unclosed\n", [], "invalid YAML"),
        ("_base_: missing.yaml\ntask: config_test_task\n", [], "_base_: cannot read config"),
        ("_base_: [a.yaml, b.yaml]\n", [], "_base_ must be one file name"),
    ],
)
def test_errors_name_the_file_and_key(tmp_path: Path, text: str, overrides: list[str], message: str) -> None:
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    assert message in str(info.value)
    if "KEY=VALUE" not in message and "a value, not a section" not in message:
        assert "bad.yaml" in str(info.value)


def test_base_cycle_is_reported(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="_base_ cycle"):
        load_config(tmp_path / "a.yaml")


def test_unknown_task_lists_known_tasks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="known: .*config_test_task"):
        load_config(write(tmp_path / "t.yaml", "task: nonexistent_zzz\n"))


@dataclass
class _CheckedData:
    size: int = 4

    def check(self) -> None:
        if self.size < 1:
            raise ConfigError(f"data.size: expected a positive integer, got {self.size}")


@TASKS.register("config_check_hook_task")
class _CheckHookTask(Task):  # a task whose data section checks its own values
    data_config = _CheckedData
    loss_config = _ToyLoss


def test_section_checks_run_at_load_and_name_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "hook.yaml", "task: config_check_hook_task\ndata: {size: 0}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: data.size: expected a positive integer, got 0"
    with pytest.raises(ConfigError, match=r"hook.yaml: optim.lr: expected a positive number, got -1.0 \(from --set"):
        load_config(write(tmp_path / "hook.yaml", "task: config_check_hook_task\n"), ["optim.lr=-1"])
    assert load_config(path, ["data.size=2"]).data.size == 2


@pytest.mark.parametrize("text", ["1e-4", "2E5", "-3e+2", "+1.5e-3", "1.e-4", ".5e-1", "1_0e2"])
def test_exponent_numbers_without_a_dot_are_floats(text: str) -> None:
    """YAML 1.2 reads ``1e-4`` as a float; PyYAML's YAML 1.1 would give the string '1e-4'."""
    assert load_yaml(f"v: {text}") == {"v": float(text.replace("_", ""))}


@pytest.mark.parametrize("text", ["1.0e-4", "10", "0x1F", "0o17", ".5", "1_000", "true", "null", "'1e-4'", "1e",
                                  "e4", "1e-4x", "x1e4", "1:30", ".inf", "-.nan", "2026-11-30", "[1e-4x, 3]"])
def test_every_other_value_reads_as_pyyaml_reads_it(text: str) -> None:
    expected, got = yaml.safe_load(f"v: {text}")["v"], load_yaml(f"v: {text}")["v"]
    assert repr(got) == repr(expected) and type(got) is type(expected)  # repr: nan equals itself this way


def test_a_config_and_an_override_take_exponent_floats(tmp_path: Path) -> None:
    (tmp_path / "exp.yaml").write_text("task: classification\nmodel: {name: classifier, num_classes: 2}\n"
                                       "optim:\n  lr: 1e-4\n  weight_decay: 5e-2\n", encoding="utf-8")
    cfg = load_config(tmp_path / "exp.yaml", ["schedule.min_lr=1e-9"])
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.schedule.min_lr) == (1e-4, 5e-2, 1e-9)
    with pytest.raises(ConfigError, match=r"train.epochs: expected int, got float 100.0"):
        load_config(tmp_path / "exp.yaml", ["train.epochs=1e2"])
