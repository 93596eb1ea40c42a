"""Top-1, top-5, per-class accuracy and the confusion matrix, against a numpy brute force; the
files ``densevit score classification`` reads, and its one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from densevit.cli import main
from densevit.evaluation.classification import (
    ClassificationEvaluator,
    ranked_columns,
    score_files,
)


def brute_force(ranked: np.ndarray, labels: np.ndarray, k: int) -> dict:
    confusion = np.zeros((k, k), np.int64)
    for truth, row in zip(labels, ranked):
        confusion[truth, row[0]] += 1
    per_class = [confusion[c, c] / confusion[c].sum() if confusion[c].sum() else None for c in range(k)]
    present = [a for a in per_class if a is not None]
    return {"top1": float(np.mean(ranked[:, 0] == labels)),
            "top5": float(np.mean([truth in row[:5] for truth, row in zip(labels, ranked)])),
            "mean_class_acc": float(np.mean(present)), "per_class": per_class, "confusion": confusion.tolist()}


def test_the_scores_match_a_brute_force_over_batches():
    rng = np.random.default_rng(0)
    k, n = 9, 257
    logits = rng.normal(size=(n, k))
    labels = rng.integers(0, k - 1, size=n)  # the last class never appears: its accuracy is None
    logits[np.arange(n), labels] += 1.0
    ranked = np.argsort(-logits, axis=1)[:, :5]
    evaluator = ClassificationEvaluator(k)
    for start in range(0, n, 50):
        evaluator.process({"topk": torch.from_numpy(ranked[start:start + 50])},
                          {"labels": torch.from_numpy(labels[start:start + 50])})
    got, expected = evaluator.compute(), brute_force(ranked, labels, k)
    for key in ("top1", "top5", "mean_class_acc"):
        assert got[key] == pytest.approx(expected[key], rel=1e-12), key
    assert [row["acc"] for row in got["per_class"]] == pytest.approx(expected["per_class"])
    assert got["per_class"][-1]["acc"] is None and got["confusion"] == expected["confusion"]
    assert got["samples"] == n


def test_top1_only_predictions_leave_top5_unknown():
    evaluator = ClassificationEvaluator(6)
    evaluator.process(torch.tensor([[1], [2], [3]]), torch.tensor([1, 0, 3]))
    result = evaluator.compute()
    assert result["top1"] == pytest.approx(2 / 3) and result["top5"] is None


def _write(path, header, rows):
    path.write_text("\n".join([",".join(header), *(",".join(map(str, r)) for r in rows)]) + "\n")
    return path


def test_files_score_as_the_evaluator_and_the_cli_writes_json(tmp_path, capsys):
    rng = np.random.default_rng(1)
    names = ["ant", "bee", "cat", "dog", "eel", "fox"]
    labels = rng.integers(0, 6, size=40)
    ranked = np.stack([rng.permutation(6)[:5] for _ in labels])
    ranked[::3, 0] = labels[::3]
    truth = _write(tmp_path / "truth.csv", ["path", "label"], [(f"img/{i}.jpg", names[t]) for i, t in enumerate(labels)])
    (tmp_path / "pred").mkdir()
    rows = [(str((tmp_path / f"img/{i}.jpg").resolve()),
             *[cell for c in r for cell in (names[c], 0.1)]) for i, r in enumerate(ranked)]
    pred = _write(tmp_path / "pred" / "predictions.csv", ["path", *ranked_columns(5)], rows)
    expected = brute_force(ranked, labels, 6)
    result = score_files(pred, truth)
    assert result["top1"] == pytest.approx(expected["top1"]) and result["top5"] == pytest.approx(expected["top5"])
    assert result["confusion"] == expected["confusion"]
    assert main(["score", "classification", str(pred), str(truth), "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["top1"] == pytest.approx(expected["top1"])
    assert "top1" in capsys.readouterr().out


@pytest.mark.parametrize("pred_text, message", [
    ("file,label\na.jpg,cat\n", "row 1: expected a header with columns path and label"),
    ("path,label,prob\na.jpg,cat\n", "row 2: 2 cells for the 3 columns"),
    ("path,label,prob\na.jpg,cat,high\n", "row 2: prob 'high' is not a number"),
    ("path,label\nb.jpg,cat\n", "no prediction for 1 of the 1 images"),
    ("path,label,prob,label_2,prob_2\na.jpg,,,dog,0.1\n", "row 2: expected a path and a label"),
])
def test_malformed_predictions_are_one_line_and_exit_2(tmp_path, capsys, pred_text, message):
    truth = _write(tmp_path / "truth.csv", ["path", "label"], [("a.jpg", "cat")])
    pred = tmp_path / "pred.csv"
    pred.write_text(pred_text)
    assert main(["score", "classification", str(pred), str(truth)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and str(pred) in err
