"""Nothing lost: a checkpoint killed mid-write leaves the previous one whole, and an input error
during training leaves the last good checkpoint and the metrics log readable (and resumable)."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import torch
from test_input_errors import error_lines, shapes_run, truncate

from densevit.cli import main
from densevit.engine.checkpoint import load_checkpoint, remove_partial_checkpoints
from densevit.engine.logs import read_records
from densevit.engine.sampler import ResumableDistributedSampler

WRITER = textwrap.dedent("""
    import sys, torch
    from densevit.engine.checkpoint import save_checkpoint
    path = sys.argv[1]
    moments = torch.empty(16, 1024, 1024)
    version = 0
    while True:  # 64 MB checkpoints back to back (mostly optimiser state), each filled with its version
        version += 1
        state = {"model": {"w": torch.full((8,), float(version))}, "optimizer": {"m": moments.fill_(float(version))}}
        save_checkpoint({**state, "step": version}, path)
        print(version, flush=True)
""")


def test_sigkill_while_a_checkpoint_is_written_leaves_one_that_loads(tmp_path):
    path = tmp_path / "last.pth"
    for delay in (0.05, 0.2, 0.45, 0.7):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        first = proc.stdout.readline()  # one checkpoint is complete
        assert first.strip(), "the writer did not start"
        time.sleep(delay)  # ... and the next ones are being written when the kill comes
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        state = load_checkpoint(path)
        for tensor in (state["model"]["w"], state["optimizer"]["m"]):
            assert torch.equal(tensor, torch.full_like(tensor, float(state["step"])))
    # The killed writes' temporary files are what the next run clears away.
    remove_partial_checkpoints(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]


def test_an_input_error_mid_run_keeps_the_last_checkpoint_and_the_log(tmp_path, capsys):
    data, args = shapes_run(tmp_path, "train.iters=4", "train.checkpoint_every=1", "train.eval_every=0",
                            "train.final_eval=skip", "seed=0")
    sampler = ResumableDistributedSampler(8, 1, 0, seed=0, shuffle=True)
    sampler.set_position(0)
    third_step = list(sampler)[4:6]  # batch size 2: the images of step 3
    images = sorted((data / "images" / "train").iterdir())
    bad = images[third_step[0]]
    original = bad.read_bytes()
    truncate(bad)
    run = tmp_path / "run"
    assert main([*args, "--out", str(run)]) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert str(bad) in line
    assert load_checkpoint(run / "last.pth")["step"] == 2
    assert [r["step"] for r in read_records(run / "metrics.jsonl")] == [1, 2]

    bad.write_bytes(original)  # the user fixes the file and continues
    assert main([*args, "--out", str(run), "--resume", "auto"]) == 0
    assert load_checkpoint(run / "last.pth")["step"] == 4
    assert [r["step"] for r in read_records(run / "metrics.jsonl")] == [1, 2, 3, 4]
