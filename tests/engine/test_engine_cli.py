"""``densevit train | evaluate | predict`` on the toy config, in-process through the CLI entry point."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from toy_segmentation_task import CONFIG, ToyNet

from densevit.cli import main
from densevit.engine.build import build_from_checkpoint
from densevit.engine.checkpoint import load_checkpoint
from densevit.engine.logs import read_records


def last_json(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", str(CONFIG), "--out", str(out), "--device", "cpu", "--set", "train.epochs=1"]) == 0
    return out


def test_train_writes_the_run_directory(run_dir, capsys):
    assert (run_dir / "config.yaml").is_file() and (run_dir / "last.pth").is_file()
    assert "epochs: 1" in (run_dir / "config.yaml").read_text()  # the resolved config, overrides applied


def test_resume_auto_on_a_finished_run_trains_nothing_more(run_dir, capsys):
    code = main(["train", str(CONFIG), "--out", str(run_dir), "--device", "cpu", "--resume", "auto",
                 "--set", "train.epochs=1"])
    assert code == 0
    captured = capsys.readouterr()
    assert "resumed from" in captured.err
    records = read_records(run_dir / "metrics.jsonl")
    assert [(r["split"], r["step"]) for r in records] == [("train", s) for s in (1, 2, 3, 4)] + [("val", 4)]
    assert last_json(captured.out)["metrics"] == json.loads((run_dir / "metrics.json").read_text())


def test_resume_auto_in_an_empty_directory_starts_fresh(tmp_path, capsys):
    out = tmp_path / "fresh"
    assert main(["train", str(CONFIG), "--out", str(out), "--device", "cpu", "--resume", "auto",
                 "--set", "train.epochs=1", "--set", "train.best_metric="]) == 0
    assert "starting from scratch" in capsys.readouterr().err
    assert load_checkpoint(out / "last.pth")["step"] == 4 and not (out / "best.pth").exists()


def test_evaluate_matches_the_training_run(run_dir, tmp_path, capsys):
    out_file = tmp_path / "eval.json"
    code = main(["evaluate", str(CONFIG), "--checkpoint", str(run_dir / "last.pth"), "--device", "cpu",
                 "--out", str(out_file)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out_file.read_text()) == json.loads((run_dir / "metrics.json").read_text())


def test_predict_matches_the_model_loaded_by_hand(run_dir, tmp_path, capsys):
    images = torch.randn(2, 3, 12, 20, generator=torch.Generator().manual_seed(3))
    inputs = []
    for i, image in enumerate(images):
        inputs.append(tmp_path / f"img{i}.npy")
        np.save(inputs[-1], image.numpy())
    out = tmp_path / "pred"
    code = main(["predict", "--checkpoint", str(run_dir / "best.pth"), *map(str, inputs), "--out", str(out),
                 "--device", "cpu"])
    assert code == 0
    net = ToyNet(3)
    net.load_state_dict(torch.load(run_dir / "best.pth", weights_only=True)["model"])
    net.eval()
    with torch.no_grad():
        expected = net(images)["logits"].argmax(1).numpy()
    for i in range(2):
        np.testing.assert_array_equal(np.load(out / f"img{i}.npy"), expected[i])


def test_build_from_checkpoint(run_dir):
    task, model = build_from_checkpoint(run_dir / "last.pth")
    assert task.cfg.train.epochs == 1 and task.class_names() == ["low", "mid", "high"]
    assert not model.training
    state = load_checkpoint(run_dir / "last.pth")["model"]
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_bad_inputs_exit_2_with_one_line(run_dir, tmp_path, capsys):
    broken = tmp_path / "cut.pth"
    broken.write_bytes((run_dir / "last.pth").read_bytes()[:500])
    assert main(["evaluate", str(CONFIG), "--checkpoint", str(broken), "--device", "cpu"]) == 2
    assert "cut.pth: cannot read checkpoint" in capsys.readouterr().err
    assert main(["train", str(CONFIG), "--out", str(tmp_path / "x"), "--resume", str(broken), "--device", "cpu"]) == 2
    assert "cut.pth" in capsys.readouterr().err
    assert main(["train", str(CONFIG), "--out", str(tmp_path / "y"), "--set", "train.iters=5"]) == 2
    assert "train.epochs / train.iters" in capsys.readouterr().err
    assert main(["train", str(CONFIG), "--out", str(tmp_path / "z"), "--device", "tpu"]) == 2
    assert "--device" in capsys.readouterr().err
    assert main(["train", str(CONFIG), "--set", "train.imports=[no_such_module_here]"]) == 2
    assert "train.imports: cannot import 'no_such_module_here'" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(run_dir / "last.pth"), str(tmp_path / "missing.npy"),
                 "--out", str(tmp_path / "p")]) == 2
    assert "missing.npy" in capsys.readouterr().err


def test_nan_through_the_cli_exits_1(tmp_path, capsys):
    code = main(["train", str(CONFIG), "--out", str(tmp_path / "nan"), "--device", "cpu",
                 "--set", "loss.nan_at_call=2"])
    assert code == 1
    assert "non-finite loss at step 2" in capsys.readouterr().err
    assert not (tmp_path / "nan" / "last.pth").exists()
