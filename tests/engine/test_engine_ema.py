"""EMA of the weights, sync_bn and the epoch hook, on the toy task.

EMA runs use a short ramp (decay 0.9, warmup 3 over 8 steps) so that the average differs
clearly from the weights being trained, and a BatchNorm toy net so that buffers are averaged
(running statistics) and copied (``num_batches_tracked``).
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from toy_segmentation_task import (
    CONFIG,
    ToyNet,
    ToySegmentationTask,
    read_epoch_log,
    toy_config,
)

from densevit.engine.checkpoint import load_checkpoint
from densevit.engine.ema import ModelEMA
from densevit.engine.logs import read_records
from densevit.engine.runtime import sync_batchnorm
from densevit.engine.signals import TrainingInterrupted
from densevit.engine.trainer import Trainer, train
from densevit.errors import ConfigError

HERE = Path(__file__).resolve().parent
DECAY, WARMUP = 0.9, 3
BN = ("model.kwargs={norm: batch}",)
EMA = (*BN, f"train.ema.decay={DECAY}", f"train.ema.warmup={WARMUP}")


def closed_form_ema(snapshots: list[dict[str, torch.Tensor]], decay: float, warmup: int) -> dict[str, torch.Tensor]:
    """The average after ``n = len(snapshots) - 1`` updates, in float64, from the initial weights
    ``w_0`` and the weights ``w_k`` after each step: with ``d_k = decay (1 - exp(-k / warmup))``,
    ``ema_n = (d_1 ... d_n) w_0 + sum_k (1 - d_k) (d_{k+1} ... d_n) w_k``; non-float entries are ``w_n``'s."""
    n = len(snapshots) - 1
    d = [decay * (1 - math.exp(-k / warmup)) for k in range(1, n + 1)]  # d[k - 1] is d_k
    weights = [math.prod(d)] + [(1 - d[k - 1]) * math.prod(d[k:]) for k in range(1, n + 1)]
    assert math.isclose(sum(weights), 1.0)
    return {
        name: sum(w * s[name].double() for w, s in zip(weights, snapshots)) if last.is_floating_point() else last
        for name, last in snapshots[-1].items()
    }


def assert_matches_closed_form(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert state.keys() == expected.keys()
    for name, value in expected.items():
        if value.is_floating_point():
            torch.testing.assert_close(state[name].double(), value, rtol=1e-5, atol=1e-6, msg=name)
        else:
            assert torch.equal(state[name], value), name


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def toy_metrics(state_dict: dict[str, torch.Tensor], cfg) -> dict:
    """The toy evaluator's metrics of ``state_dict`` on the validation set, computed here rather
    than by the trainer (batches of 4, as the trainer's validation)."""
    task = ToySegmentationTask(cfg)
    model = task.build_model()
    model.load_state_dict(state_dict)
    model.eval()
    _, val = task.build_datasets()
    evaluator = task.build_evaluator()
    with torch.no_grad():
        for start in range(0, len(val), 4):
            images, masks = task.collate([val[i] for i in range(start, min(start + 4, len(val)))])
            evaluator.process(model(images)["logits"].argmax(1), masks)
    return evaluator.compute()


def records_without_timing(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in read_records(run_dir / "metrics.jsonl")]


def assert_same_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name, value in a.items():
        assert torch.equal(value, b[name]), name


# ---------------------------------------------------------------------- the average itself


def test_ema_update_matches_the_closed_form():
    """Five SGD steps of a BatchNorm net: parameters and running statistics follow the closed
    form, the step counter is copied, and the average is a separate, frozen copy."""
    model = ToyNet(3, norm="batch")
    ema = ModelEMA(model, DECAY, WARMUP)
    assert ema.module is not model and not any(p.requires_grad for p in ema.module.parameters())
    assert not ema.module.training
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    snapshots = [snapshot(model)]
    for _ in range(5):
        images = torch.randn(4, 3, 8, 8)
        loss = model(images)["logits"].pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        ema.update(model)
        snapshots.append(snapshot(model))
    assert ema.updates == 5
    assert ema.decay_at(1) == pytest.approx(DECAY * (1 - math.exp(-1 / WARMUP)))
    assert int(ema.state_dict()["backbone.1.num_batches_tracked"]) == 5
    assert_matches_closed_form(ema.state_dict(), closed_form_ema(snapshots, DECAY, WARMUP))
    # and it is not simply the model's weights
    assert not torch.allclose(ema.state_dict()["head.weight"], model.state_dict()["head.weight"])

    restored = ModelEMA(ToyNet(3, norm="batch"), DECAY, WARMUP)
    restored.load_state_dict(ema.state_dict(), ema.updates)
    assert restored.updates == 5
    assert_same_states(restored.state_dict(), ema.state_dict())


def test_ema_config_is_nested_and_checked():
    cfg = toy_config("train.ema={decay: 0.9999, warmup: 2000}")
    assert (cfg.train.ema.decay, cfg.train.ema.warmup) == (0.9999, 2000)
    assert toy_config().train.ema.decay == 0.0  # off by default
    cfg.train.check()
    for key, value, message in (
        ("decay", 1.0, r"train\.ema\.decay: expected a value in \[0, 1\)"),
        ("decay", -0.1, r"train\.ema\.decay: expected a value in \[0, 1\)"),
        ("warmup", 0, r"train\.ema\.warmup: expected a positive number of steps"),
    ):
        with pytest.raises(ConfigError, match=message):
            toy_config(f"train.ema.{key}={value}").train.check()
    with pytest.raises(ConfigError, match="unknown key 'train.ema.beta'"):
        toy_config("train.ema.beta=0.5")


# ---------------------------------------------------------------------- in the training loop


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    """2 epochs (8 steps) with EMA, recording the trained weights after every step."""
    out = tmp_path_factory.mktemp("ema")
    trainer = Trainer(toy_config(*EMA), out, device="cpu")
    snapshots = [snapshot(trainer.model)]
    step = trainer.train_step

    def recording_step(chunk):
        terms = step(chunk)
        snapshots.append(snapshot(trainer.model))
        return terms

    trainer.train_step = recording_step
    try:
        metrics = trainer.fit()
    finally:
        trainer.close()
    return out, metrics, snapshots


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """The same run without EMA."""
    out = tmp_path_factory.mktemp("plain")
    return out, train(toy_config(*BN), out, device="cpu")


def test_checkpoints_and_validation_use_the_ema_weights(ema_run, plain_run):
    out, metrics, snapshots = ema_run
    assert len(snapshots) == 9
    last, best = load_checkpoint(out / "last.pth"), load_checkpoint(out / "best.pth")
    assert (last["step"], last["ema_updates"]) == (8, 8)
    assert_matches_closed_form(last["model"], closed_form_ema(snapshots, DECAY, WARMUP))
    assert_same_states(last["train_model"], snapshots[-1])
    # best.pth: the average as validated at its step; no trained weights, no optimiser
    assert best.keys() == {"model", "config", "class_names", "epoch", "step", "best", "metrics"}
    assert_matches_closed_form(best["model"], closed_form_ema(snapshots[: best["step"] + 1], DECAY, WARMUP))

    # The metrics are the average's, computed here from the checkpoints' weights.
    cfg = toy_config(*EMA)
    assert toy_metrics(last["model"], cfg) == metrics == last["metrics"]
    assert toy_metrics(last["train_model"], cfg) != metrics
    assert toy_metrics(best["model"], cfg) == best["metrics"] and best["best"] == best["metrics"]["mIoU"]
    val = [r for r in read_records(out / "metrics.jsonl") if r["split"] == "val"]
    assert [r["step"] for r in val] == [4, 8] and val[-1]["mIoU"] == metrics["mIoU"]

    # Averaging leaves training itself alone: the trained weights are those of a run without EMA.
    plain_dir, _ = plain_run
    plain_last = load_checkpoint(plain_dir / "last.pth")
    assert_same_states(last["train_model"], plain_last["model"])
    assert "train_model" not in plain_last and "ema_updates" not in plain_last


@pytest.mark.parametrize("interrupt_at_call, sig", [(4, "SIGINT"), (6, "SIGTERM")])
def test_interrupt_and_resume_with_ema_equals_straight_run(ema_run, tmp_path, interrupt_at_call, sig):
    ref_dir, ref_metrics, _ = ema_run
    cfg = toy_config(*EMA, f"loss.interrupt_at_call={interrupt_at_call}", f"loss.interrupt_signal={sig}")
    with pytest.raises(TrainingInterrupted, match=f"at step {interrupt_at_call}/8"):
        train(cfg, tmp_path, device="cpu")
    assert load_checkpoint(tmp_path / "last.pth")["ema_updates"] == interrupt_at_call
    metrics = train(toy_config(*EMA), tmp_path, resume="auto", device="cpu")
    assert metrics == ref_metrics
    assert records_without_timing(tmp_path) == records_without_timing(ref_dir)
    resumed, straight = load_checkpoint(tmp_path / "last.pth"), load_checkpoint(ref_dir / "last.pth")
    assert resumed["ema_updates"] == straight["ema_updates"] == 8
    assert_same_states(resumed["model"], straight["model"])  # the average, bit for bit
    assert_same_states(resumed["train_model"], straight["train_model"])
    assert_same_states(load_checkpoint(tmp_path / "best.pth")["model"], load_checkpoint(ref_dir / "best.pth")["model"])


def test_resume_across_turning_ema_on_or_off(ema_run, plain_run, tmp_path, capsys):
    """A checkpoint with EMA resumed without: the model continues from the trained weights, not
    the average. A checkpoint without EMA resumed with: the average starts from its weights."""
    ema_dir, _, _ = ema_run
    plain_dir, _ = plain_run
    with_ema, without = load_checkpoint(ema_dir / "last.pth"), load_checkpoint(plain_dir / "last.pth")

    trainer = Trainer(toy_config(*BN), tmp_path / "off", device="cpu")
    try:
        trainer.resume(ema_dir / "last.pth")
        assert trainer.ema is None
        assert_same_states(snapshot(trainer.model), with_ema["train_model"])
    finally:
        trainer.close()

    trainer = Trainer(toy_config(*EMA), tmp_path / "on", device="cpu")
    try:
        trainer.resume(plain_dir / "last.pth")
        assert trainer.ema.updates == 0
        assert_same_states(trainer.ema.state_dict(), without["model"])
        assert_same_states(snapshot(trainer.model), without["model"])
    finally:
        trainer.close()
    assert "was written without EMA; the average starts from its weights" in capsys.readouterr().err


def test_two_gloo_processes_with_ema_match_one_process(tmp_path):
    """DDP (2 x 4) with EMA equals one process (8): the average, the trained weights and the
    metrics. sync_bn on gloo says once (rank 0 only) that it cannot run, and training goes on."""
    same_data = ("model.kwargs={dropout: 0.0}", "data.flip=false", "train.epochs=2",
                 f"train.ema.decay={DECAY}", f"train.ema.warmup={WARMUP}")
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    sets = [arg for s in (*same_data, "train.batch_size=4", "train.sync_bn=true") for arg in ("--set", s)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "densevit", "train", str(CONFIG), "--out", str(ddp_dir), "--device", "cpu", *sets]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    said = [line for line in done.stderr.splitlines() if "train.sync_bn" in line]
    assert said == [("train.sync_bn: SyncBatchNorm needs CUDA processes (NCCL); this CPU run normalises "
                     "each process's own batch")]

    single_metrics = train(toy_config(*same_data, "train.batch_size=8"), single_dir, device="cpu")
    ddp_state, single_state = load_checkpoint(ddp_dir / "last.pth"), load_checkpoint(single_dir / "last.pth")
    assert ddp_state["ema_updates"] == single_state["ema_updates"] == 4
    for key in ("model", "train_model"):
        for name, value in single_state[key].items():
            torch.testing.assert_close(ddp_state[key][name], value, rtol=1e-4, atol=1e-5, msg=f"{key}: {name}")
    assert not torch.allclose(single_state["model"]["head.weight"], single_state["train_model"]["head.weight"])
    ddp_metrics = ddp_state["metrics"]
    assert ddp_metrics["images"] == 8
    assert abs(ddp_metrics["mIoU"] - single_metrics["mIoU"]) < 1e-4


# ---------------------------------------------------------------------- sync_bn, epoch hook


def test_sync_bn_where_it_cannot_run_says_why_once(tmp_path, capsys):
    trainer = Trainer(toy_config(*BN, "train.sync_bn=true"), tmp_path, device="cpu")
    try:
        said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train.sync_bn")]
        assert said == [("train.sync_bn: one process: BatchNorm already normalises over the whole batch; "
                         "nothing to synchronise")]
        assert isinstance(trainer.model.backbone[1], torch.nn.BatchNorm2d)
        assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in trainer.model.modules())
        # Where it can run (CUDA, several processes) the BatchNorm layers are converted, silently.
        converted, why_not = sync_batchnorm(ToyNet(3, norm="batch"), 2, torch.device("cuda"))
        assert isinstance(converted.backbone[1], torch.nn.SyncBatchNorm) and why_not is None
    finally:
        trainer.close()


def _hook_calls(log: Path) -> list[tuple[str, int]]:
    """The set_epoch calls in ``log``, after checking that every sample was read in the epoch
    set last (loader workers included); the log is then emptied for the next run."""
    lines = read_epoch_log(log)
    log.unlink()
    current = None
    for who, epoch in lines:
        if who == "dataset":
            current = epoch
        elif who == "sample":
            assert epoch == current, lines
    return [(who, epoch) for who, epoch in lines if who != "sample"]


def _calls(*epochs: int) -> list[tuple[str, int]]:
    return [(who, epoch) for epoch in epochs for who in ("dataset", "task")]


@pytest.mark.parametrize("interrupt_at_call, started", [(4, [0]), (6, [0, 1])])  # end of epoch 0; mid-epoch 1
def test_set_epoch_hook_sees_every_epoch_in_order_also_after_a_resume(tmp_path, interrupt_at_call, started):
    """One loader worker: set_epoch must come before the worker copies the dataset."""
    log = tmp_path / "epochs.log"
    sets = ("train.epochs=3", "train.num_workers=1", "data.flip=false", f"data.epoch_log={log}")
    train(toy_config(*sets), tmp_path / "straight", device="cpu")
    samples = [who for who, _ in read_epoch_log(log)].count("sample")
    assert _hook_calls(log) == _calls(0, 1, 2) and samples == 3 * 16

    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        train(toy_config(*sets, f"loss.interrupt_at_call={interrupt_at_call}"), run, device="cpu")
    assert _hook_calls(log) == _calls(*started)
    train(toy_config(*sets), run, resume="auto", device="cpu")
    assert _hook_calls(log) == _calls(1, 2)  # an epoch whose last step was done is not started again
