"""Experiment trackers (``train.loggers``): what TensorBoard, MLflow and W&B hold after a toy run,
read back with each tool's own reader and compared with ``metrics.jsonl``.

Nothing leaves the machine: MLflow writes a file store in the test's folder, W&B runs offline
with its server address pointing at a closed local port, and any connection the test process
tries to a non-loopback address fails the test.
"""
from __future__ import annotations

import json
import socket
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from toy_segmentation_task import CONFIG, toy_config

from densevit.cli import main
from densevit.engine.logs import RunLogger, read_records
from densevit.engine.trackers import IDS_FILE, TRACKERS
from densevit.engine.trainer import NonFiniteLossError, train
from densevit.errors import InputNote

ALL = "train.loggers=[jsonl,tensorboard,mlflow,wandb]"


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """MLflow to a file store, W&B offline, both under a temporary folder; no remote connection."""
    root = tmp_path_factory.mktemp("trackers")
    real_connect = socket.socket.connect

    def local_only(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"the test tried to reach {address}")
        return real_connect(sock, address)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", (root / "mlruns").as_uri())
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 wants a database otherwise (not in mlflow-skinny)
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_DIR", str(root))
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
        mp.delenv("WANDB_PROJECT", raising=False)
        mp.setattr(socket.socket, "connect", local_only)
        yield root


@pytest.fixture(scope="module")
def tracked(offline):
    """The toy run (2 epochs, 8 steps, a record per step, validation per epoch) with every logger."""
    run_dir = offline / "toy-run"
    metrics = train(toy_config(ALL, "train.tensorboard=true"), run_dir, device="cpu")
    return run_dir, metrics, read_records(run_dir / "metrics.jsonl")


def expected_series(records: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """``{"train/loss": [(step, value), ...], "val/mIoU": [...]}`` from the metrics.jsonl records."""
    series: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for name, value in record.items():
            if name not in ("split", "step", "epoch") and isinstance(value, float | int):
                series.setdefault(f"{record['split']}/{name}", []).append((record["step"], float(value)))
    return series


def assert_same_series(logged: list[tuple[int, float]], expected: list[tuple[int, float]], key: str,
                       rel: float = 1e-12) -> None:
    assert [step for step, _ in logged] == [step for step, _ in expected], key
    assert [value for _, value in logged] == pytest.approx([value for _, value in expected], rel=rel), key


def dotted(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def mlflow_run(offline, run_id: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(offline / "mlruns").as_uri())
    return client, client.get_run(run_id)


def test_the_run_folder_keeps_the_tracked_runs_ids(offline, tracked):
    run_dir, _, _ = tracked
    ids = json.loads((run_dir / IDS_FILE).read_text())
    assert set(ids) == {"mlflow", "wandb"}
    assert list(offline.glob(f"wandb/offline-run-*-{ids['wandb']}")), "W&B's offline run under WANDB_DIR has the id"


def test_mlflow_holds_the_metrics_config_and_final_numbers(offline, tracked):
    run_dir, metrics, records = tracked
    client, run = mlflow_run(offline, json.loads((run_dir / IDS_FILE).read_text())["mlflow"])
    assert run.info.run_name == "toy-run" and run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "toy"  # the config's name
    series = expected_series(records)
    assert "train/loss" in series and "val/mIoU" in series and len(series["train/loss"]) == 8
    for key, points in series.items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert_same_series(history, points, key)

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    params = run.data.params
    assert params["optim.lr"] == "0.01" and params["train.epochs"] == "2" and params["model.name"] == "toy_convnet"
    assert params["train.loggers"] == '["jsonl", "tensorboard", "mlflow", "wandb"]'
    assert set(params) == set(dotted(config))
    artifact = client.download_artifacts(run.info.run_id, "config.yaml", str(offline / "download"))
    assert Path(artifact).read_text() == (run_dir / "config.yaml").read_text()

    best = max(r["mIoU"] for r in records if r["split"] == "val")
    assert run.data.metrics["best/mIoU"] == pytest.approx(best)
    assert run.data.metrics["final/mIoU"] == pytest.approx(metrics["mIoU"])


def read_wandb_records(path: Path) -> list[Any]:
    """The protobuf records of a ``.wandb`` file: a 7-byte header, then LevelDB-log blocks of
    32 KiB, each chunk ``crc32 (4) | length (2, little-endian) | type (1: full, 2: first, 3: middle, 4: last)``."""
    from wandb.proto import wandb_internal_pb2

    raw = path.read_bytes()
    assert raw[:4] == b":W&B"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        pending += raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_contents(folder: Path, run_id: str) -> tuple[dict[int, dict[str, Any]], dict[str, Any], dict[str, Any], Any]:
    """History rows by step, config, summary and the run record of offline run ``run_id`` in ``folder``/wandb."""
    [path] = folder.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb")
    rows, config, summary, run = {}, {}, {}, None
    for record in read_wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            rows[row["_step"]] = row
        elif kind == "run":
            run = record.run
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "summary":
            summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.summary.update})
    return rows, config, summary, run


def test_wandb_offline_run_holds_the_metrics_config_and_final_numbers(offline, tracked):
    run_dir, metrics, records = tracked
    run_id = json.loads((run_dir / IDS_FILE).read_text())["wandb"]
    rows, config, summary, run = wandb_contents(offline, run_id)
    assert run.display_name == "toy-run" and run.project == "densevit"
    for key, points in expected_series(records).items():
        logged = [(step, rows[step][key]) for step in sorted(rows) if key in rows[step]]
        assert_same_series(logged, points, key)
    config.pop("_wandb", None)  # W&B's own entry
    assert config == yaml.safe_load((run_dir / "config.yaml").read_text())
    assert summary["best/mIoU"] == pytest.approx(max(r["mIoU"] for r in records if r["split"] == "val"))
    assert summary["final/mIoU"] == pytest.approx(metrics["mIoU"])


def test_tensorboard_holds_the_metrics(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, metrics, records = tracked
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    for key, points in expected_series(records).items():
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        assert_same_series(logged, points, key, rel=1e-6)  # event files keep float32
    assert events.Scalars("final/mIoU")[0].value == pytest.approx(metrics["mIoU"], rel=1e-6)


def test_a_resumed_run_continues_the_same_tracked_runs(offline, monkeypatch):
    """A NaN at step 7 stops the run (last checkpoint: step 4, records up to step 6); the resumed
    run rewrites steps 5 and 6 in metrics.jsonl but MLflow gets each step once. Without
    WANDB_DIR, W&B writes in the run folder."""
    monkeypatch.delenv("WANDB_DIR")
    run_dir = offline / "resumed"
    sets = ("train.loggers=[mlflow,wandb]", "loss.nan_at_call=7")
    with pytest.raises(NonFiniteLossError, match="step 7"):
        train(toy_config(*sets), run_dir, device="cpu")
    first_ids = json.loads((run_dir / IDS_FILE).read_text())
    client, run = mlflow_run(offline, first_ids["mlflow"])
    assert run.info.status == "FAILED"

    train(toy_config("train.loggers=[mlflow,wandb]"), run_dir, resume="auto", device="cpu")
    assert json.loads((run_dir / IDS_FILE).read_text()) == first_ids
    # offline, each process writes a folder named by its start second and the run id: one or two
    assert list(run_dir.glob(f"wandb/offline-run-*-{first_ids['wandb']}"))
    client, run = mlflow_run(offline, first_ids["mlflow"])
    assert run.info.status == "FINISHED"
    records = read_records(run_dir / "metrics.jsonl")
    for key, points in expected_series(records).items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        if key == "train/steps_per_s":  # timing differs between the two processes
            assert [s for s, _ in history] == [s for s, _ in points]
        else:
            assert_same_series(history, points, key)
    assert not (run_dir / "tensorboard").exists() and (run_dir / "metrics.jsonl").is_file()


def test_metrics_jsonl_is_written_whatever_the_list_and_the_old_switch_still_works(tmp_path):
    train(toy_config("train.loggers=[tensorboard]", "train.tensorboard=false", "train.epochs=1"), tmp_path,
          device="cpu")
    assert len(read_records(tmp_path / "metrics.jsonl")) == 5  # 4 steps + 1 validation
    assert not (tmp_path / "tensorboard").exists()


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_an_unknown_logger_is_one_line_with_the_close_name(capsys, tmp_path):
    assert main(["train", str(CONFIG), "--set", "train.loggers=[jsonl,mlfow]", "--out", str(tmp_path)]) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert "train.loggers[1]: expected one of 'jsonl', 'tensorboard', 'mlflow', 'wandb', got 'mlfow'" in line
    assert line.endswith("(did you mean 'mlflow'?) (from --set train.loggers=[jsonl,mlfow])"), line


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
def test_a_missing_package_is_one_line_naming_the_extra(monkeypatch, capsys, tmp_path, name):
    monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    args = ["train", str(CONFIG), "--set", f"train.loggers=[jsonl,{name}]", "--out", str(tmp_path), "--device", "cpu"]
    assert main(args) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert line == f'densevit train: error: train.loggers: {name} is not installed (pip install "densevit[{name}]")'
    assert not (tmp_path / "metrics.jsonl").exists()  # stopped before training


def test_without_tensorboard_the_default_list_notes_it_and_goes_on(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.warns(InputNote, match=r'tensorboard is not installed.*pip install "densevit\[logs\]"'):
        logger = RunLogger(tmp_path, enabled=True)
    assert logger.trackers == {}


def test_every_logger_name_of_the_schema_is_a_tracker_or_jsonl():
    from typing import get_args, get_type_hints

    from densevit.config import TrainConfig

    [literal] = get_args(get_type_hints(TrainConfig)["loggers"])
    assert set(get_args(literal)) == {"jsonl", *TRACKERS}
