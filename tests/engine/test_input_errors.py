"""A bad file met while training reaches the user as the reader's one line: from loader workers,
and from one process of several (the others stop with it, without waiting for a timeout)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from densevit.cli import main
from densevit.data.shapes import generate_shapes
from densevit.demos import demo_config_path
from densevit.engine.sampler import ResumableDistributedSampler

SHORT = ("train.batch_size=2", "train.log_every=1", "train.progress=false", "train.tensorboard=false",
         "train.plot_curves=false")


def shapes_run(tmp_path: Path, *extra: str) -> tuple[Path, list[str]]:
    """The detection demo config on 8 + 4 generated images, as ``densevit train`` arguments."""
    data = tmp_path / "shapes"
    generate_shapes(data, {"train": 8, "val": 4}, image_size=64, seed=0)
    sets = (f"data.train_images={data / 'images' / 'train'}", f"data.train_annotations={data / 'train.json'}",
            f"data.val_images={data / 'images' / 'val'}", f"data.val_annotations={data / 'val.json'}",
            "data.train_scales=[64]", "data.max_size=64", "data.val_size=64", *SHORT, *extra)
    return data, ["train", str(demo_config_path("detect")), *(a for s in sets for a in ("--set", s))]


def truncate(path: Path) -> None:
    """Keep the header (the file opens and tells its size) and lose the pixels."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if ": error" in line]


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_bad_image_met_in_a_loader_worker_is_one_line(tmp_path, capsys, split):
    data, args = shapes_run(tmp_path, "train.iters=4", "train.num_workers=2")
    bad = sorted((data / "images" / split).iterdir())[1]
    truncate(bad)
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "worker" not in err, err
    [line] = error_lines(err)
    assert line.startswith("densevit train: error: ") and str(bad) in line, line
    if split == "train":  # stopped before any step: nothing written as if it had trained
        assert not (tmp_path / "run" / "last.pth").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_bad_image_only_process_1_reads_stops_both_processes_with_one_line(tmp_path):
    data, args = shapes_run(tmp_path, "train.iters=1", "seed=0")
    # The image process 1 draws first in epoch 0 (the sampler shards by rank); process 0 never reads it.
    sampler = ResumableDistributedSampler(8, 2, 1, seed=0, shuffle=True)
    sampler.set_position(0)
    first_of_rank1 = next(iter(sampler))
    images = sorted(path for path in (data / "images" / "train").iterdir())
    bad = images[first_of_rank1]
    truncate(bad)

    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-m", "densevit", *args, "--out", str(tmp_path / "run"), "--device", "cpu"]
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [proc.communicate(timeout=240) for proc in procs]  # a hang fails here
    codes = [proc.returncode for proc in procs]
    assert codes == [2, 2], (codes, outputs)
    first_err, second_err = outputs[0][1], outputs[1][1]
    assert "Traceback" not in first_err + second_err, (first_err, second_err)
    [line] = error_lines(first_err)
    assert line.startswith("densevit train: error: ") and str(bad) in line, line
    assert error_lines(second_err) == []  # the same error: said once, by the first process
    assert not (tmp_path / "run" / "last.pth").exists()
