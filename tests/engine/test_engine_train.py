"""The training loop on the toy task: exact resume, non-finite losses, run directory contents."""
from __future__ import annotations

import json
import math
import signal

import pytest
import torch
from toy_segmentation_task import toy_config

from densevit.engine.checkpoint import load_checkpoint
from densevit.engine.logs import read_records
from densevit.engine.signals import TrainingInterrupted
from densevit.engine.trainer import NonFiniteLossError, train


def records_without_timing(run_dir):
    return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in read_records(run_dir / "metrics.jsonl")]


def assert_same_weights(a, b):
    sa, sb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """2 epochs (8 steps), no interruption: the reference every resumed run must reproduce."""
    out = tmp_path_factory.mktemp("straight")
    metrics = train(toy_config("train.tensorboard=true", "train.plot_curves=true"), out, device="cpu")
    return out, metrics


@pytest.mark.parametrize(
    "interrupt_at_call, sig, resume_with",
    [
        (4, "SIGINT", "auto"),  # the last batch of epoch 1: stops on the epoch boundary
        (6, "SIGTERM", "path"),  # mid-epoch 2: the sampler must skip the batches already seen
        (8, "SIGINT", "auto"),  # the very last step: the resumed run still closes epoch 2
    ],
)
def test_interrupt_and_resume_equals_straight_run(straight, tmp_path, interrupt_at_call, sig, resume_with):
    ref_dir, ref_metrics = straight
    cfg = toy_config(f"loss.interrupt_at_call={interrupt_at_call}", f"loss.interrupt_signal={sig}")
    with pytest.raises(TrainingInterrupted, match=f"stopped by {sig} at step {interrupt_at_call}/8") as info:
        train(cfg, tmp_path, device="cpu")
    stopped = load_checkpoint(info.value.checkpoint)
    assert stopped["step"] == interrupt_at_call
    steps_in_epoch = interrupt_at_call % 4 or 4  # the epoch is closed (evaluated) after the stop
    assert (stopped["epoch"], stopped["batch_in_epoch"]) == ((interrupt_at_call - 1) // 4, steps_in_epoch)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored

    resume = "auto" if resume_with == "auto" else str(info.value.checkpoint)
    metrics = train(toy_config(), tmp_path, resume=resume, device="cpu")
    assert metrics == ref_metrics
    assert records_without_timing(tmp_path) == records_without_timing(ref_dir)
    assert_same_weights(tmp_path / "last.pth", ref_dir / "last.pth")
    assert_same_weights(tmp_path / "best.pth", ref_dir / "best.pth")


def test_mid_epoch_resume_with_gradient_accumulation(tmp_path):
    """Batch 2 x 2 accumulation; SIGINT during the second micro-batch of step 5."""
    sets = ("train.batch_size=2", "train.accumulate_steps=2", "train.epochs=2")
    ref = tmp_path / "ref"
    train(toy_config(*sets), ref, device="cpu")
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match="at step 5/8"):
        train(toy_config(*sets, "loss.interrupt_at_call=10"), run, device="cpu")
    train(toy_config(*sets), run, resume="auto", device="cpu")
    assert records_without_timing(run) == records_without_timing(ref)
    assert_same_weights(run / "last.pth", ref / "last.pth")


def test_run_directory(straight):
    out, metrics = straight
    names = {p.name for p in out.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "metrics.json", "last.pth", "best.pth", "curves.png", "tensorboard"} <= names
    assert json.loads((out / "metrics.json").read_text()) == metrics
    records = read_records(out / "metrics.jsonl")
    train_records = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train_records] == list(range(1, 9))
    assert {"loss", "loss_ce", "loss_aux", "lr"} <= train_records[0].keys()
    val = [r for r in records if r["split"] == "val"]
    assert [(r["step"], r["epoch"]) for r in val] == [(4, 1), (8, 2)]
    assert val[-1]["mIoU"] == metrics["mIoU"]
    best = load_checkpoint(out / "best.pth")
    assert best["best"] == max(r["mIoU"] for r in val)
    last = load_checkpoint(out / "last.pth")
    assert last["class_names"] == ["low", "mid", "high"]
    assert last["config"]["task"] == "toy_segmentation" and last["config"]["train"]["epochs"] == 2
    assert (last["step"], last["epoch"], last["batch_in_epoch"]) == (8, 2, 0)
    assert {"python", "numpy", "torch"} <= last["rng"][0].keys()
    # best.pth: what predicting and fine-tuning need, not the optimiser's moments
    assert best.keys() == {"model", "config", "class_names", "epoch", "step", "best", "metrics"}
    assert (out / "best.pth").stat().st_size < 0.6 * (out / "last.pth").stat().st_size


def test_validation_subset_and_final_evaluation(tmp_path):
    """eval_samples: the validations during training see the first N samples; final_eval says
    what the last one sees (all of them by default, the subset, or none)."""
    sets = ("train.eval_samples=3", "train.eval_batch_size=2", "train.eval_every=1")
    for final, seen in (("full", [3, 8]), ("subset", [3, 3]), ("skip", [3])):
        run = tmp_path / final
        metrics = train(toy_config(*sets, f"train.final_eval={final}"), run, device="cpu")
        val = [r for r in read_records(run / "metrics.jsonl") if r["split"] == "val"]
        assert [r["images"] for r in val] == seen  # epoch 1 on the subset; epoch 2 is the last step
        assert metrics["images"] == seen[-1]


def test_training_learns_the_toy_task(tmp_path):
    """A longer run: the loss must fall and mIoU rise well above chance."""
    sets = ("train.epochs=10", "optim.lr=0.1", "train.log_every=4", "train.eval_every=0", "train.checkpoint_every=0")
    metrics = train(toy_config(*sets), tmp_path, device="cpu")
    losses = [r["loss"] for r in read_records(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    assert losses[-1] < 0.5 * losses[0]
    assert metrics["mIoU"] > 0.8  # chance is about 0.2


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError) as info:
        train(toy_config("loss.nan_at_call=6"), tmp_path, device="cpu")
    message = str(info.value)
    assert "non-finite loss at step 6 (epoch 1)" in message
    assert "loss=nan" in message and "loss_ce=nan" in message and "loss_aux=" in message
    assert str(tmp_path / "last.pth") in message
    good = load_checkpoint(tmp_path / "last.pth")  # written at the end of epoch 1, before the NaN
    assert (good["step"], good["epoch"]) == (4, 1)
    assert all(torch.isfinite(t).all() for t in good["model"].values())
    steps = [r["step"] for r in read_records(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    assert steps == [1, 2, 3, 4, 5]


def test_nan_skip_policy_skips_the_update(tmp_path):
    metrics = train(toy_config("loss.nan_at_call=3", "train.nan_policy=skip"), tmp_path, device="cpu")
    records = [r for r in read_records(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    assert records[2]["loss"] is None  # NaN, written as JSON null
    assert all(isinstance(r["loss"], float) for i, r in enumerate(records) if i != 2)
    assert len(records) == 8 and math.isfinite(metrics["mIoU"])
    assert all(torch.isfinite(t).all() for t in load_checkpoint(tmp_path / "last.pth")["model"].values())


def test_iteration_based_run_with_mid_epoch_cadence(tmp_path):
    """iters=6 with 4 steps per epoch: evaluation and checkpoints every 3 iterations."""
    cfg = toy_config("train.epochs=0", "train.iters=6", "train.eval_every=3", "train.checkpoint_every=3")
    train(cfg, tmp_path, device="cpu")
    val = [r for r in read_records(tmp_path / "metrics.jsonl") if r["split"] == "val"]
    assert [r["step"] for r in val] == [3, 6]
    last = load_checkpoint(tmp_path / "last.pth")
    assert (last["step"], last["epoch"], last["batch_in_epoch"]) == (6, 1, 2)


def test_resume_refuses_a_truncated_checkpoint(tmp_path, straight):
    ref_dir, _ = straight
    broken = tmp_path / "broken.pth"
    broken.write_bytes((ref_dir / "last.pth").read_bytes()[:1000])
    from densevit.errors import UserInputError

    with pytest.raises(UserInputError, match="broken.pth: cannot read checkpoint"):
        train(toy_config(), tmp_path / "run", resume=str(broken), device="cpu")


def test_stop_request_merges_forwarded_signals_and_aborts_on_a_later_second_ctrl_c():
    import os
    import time

    from densevit.engine.signals import StopRequest

    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # the launcher's forwarded copy: the same request
        time.sleep(0.01)
        assert stop.requested and stop.signal_name == "SIGINT"
        stop._first_at -= StopRequest.REPEAT_WINDOW_S + 1
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_fp16_resume_restores_the_gradient_scaler(tmp_path):
    """fp16 autocast + GradScaler on the CPU: an interrupted run continues with the same scale."""
    sets = ("train.precision=fp16", "train.clip_grad_norm=1.0")
    ref = tmp_path / "ref"
    train(toy_config(*sets), ref, device="cpu")
    scaler = load_checkpoint(ref / "last.pth")["scaler"]
    assert scaler["scale"] < 2.0**16  # the scaler did back off (overflowing steps were skipped)
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        train(toy_config(*sets, "loss.interrupt_at_call=6"), run, device="cpu")
    train(toy_config(*sets), run, resume="auto", device="cpu")
    assert records_without_timing(run) == records_without_timing(ref)
    assert_same_weights(run / "last.pth", ref / "last.pth")
    assert load_checkpoint(run / "last.pth")["scaler"] == scaler


def test_bf16_autocast_trains(tmp_path):
    sets = ("train.precision=bf16", "train.epochs=10", "optim.lr=0.1", "train.eval_every=0", "train.checkpoint_every=0")
    metrics = train(toy_config(*sets), tmp_path, device="cpu")
    assert metrics["mIoU"] > 0.7


@pytest.mark.slow
def test_compile_and_channels_last_match_eager(tmp_path):
    """torch.compile (inductor, about a minute on a CPU) and channels-last give the eager losses."""
    eager = tmp_path / "eager"
    train(toy_config("train.epochs=1"), eager, device="cpu")
    compiled = tmp_path / "compiled"
    train(toy_config("train.epochs=1", "train.compile=true", "train.channels_last=true"), compiled, device="cpu")
    for a, b in zip(read_records(eager / "metrics.jsonl"), read_records(compiled / "metrics.jsonl")):
        assert a.keys() == b.keys()
        for key in ("loss", "loss_ce", "mIoU"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5)
