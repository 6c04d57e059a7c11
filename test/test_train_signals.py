"""maximask-train stops on SIGTERM: final checkpoint, no worker left behind, status 143, and resumes.

A tiny training runs as a subprocess (as ``nohup maximask-train ... &`` does); once its log shows a
training step it gets SIGTERM. The trainer must stop at the next step, write checkpoint.keras and
state.json, end its simulation worker pool and exit with 128 + 15; the same command run again must
resume from the checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL") or not Path("/proc").is_dir(),
                                reason="POSIX signals and /proc needed")

# the smallest run: a two-level network, clean sparse frames (the class-frequency estimate alone
# simulates 32 frames), periodic checkpoints and validation out of reach
TINY = ["--steps", "2000", "--batch-size", "2", "--tile", "32", "--edge-pad", "0", "--frame-size", "128",
        "--frames-per-chunk", "1", "--steps-per-chunk", "4", "--val-frames", "1",
        "--val-every", "100000", "--checkpoint-every", "100000", "--threads", "1",
        "--arch", json.dumps({"widths": [4, 8], "encoder_convs": [1, 1], "decoder_convs": [1]}),
        "--sim-config", json.dumps({"clean_prob": 1.0, "star_density": [100, 101], "galaxy_density": [50, 51],
                                    "bright_star_density": [1, 1.01], "resample_prob": 0})]
STARTUP_S = 120  # TensorFlow import + class frequencies + first 50 steps, on a loaded machine


def _children(pid):
    """PIDs of the live descendants of ``pid`` (psutil if installed, else /proc)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return {p.pid for p in psutil.Process(pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            return set()
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            parent[int(d.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for c, pp in parent.items():
            if pp == p and c not in found:
                found.add(c)
                todo.append(c)
    return found


def _alive(pid):
    """A process that exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _events(run_dir):
    log = run_dir / "log.jsonl"
    if not log.is_file():
        return []
    # whole lines only: the trainer may be writing the last one
    return [json.loads(line) for line in log.read_text().split("\n")[:-1] if line.strip()]


def _train(run_dir, err, *extra):
    """The trainer as a subprocess, its stderr to the file ``err`` (a pipe could fill and block it)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    with open(err, "w") as f:
        return subprocess.Popen([sys.executable, "-m", "maximask.train", "--run-dir", str(run_dir), *TINY,
                                 *extra], env=env, stdout=subprocess.DEVNULL, stderr=f)


def test_sigterm_checkpoints_ends_workers_and_resumes(tmp_path):
    run_dir = tmp_path / "run"
    err = tmp_path / "train.err"
    proc = _train(run_dir, err)
    try:
        deadline = time.time() + STARTUP_S
        while not any(e["event"] == "train" for e in _events(run_dir)):
            assert proc.poll() is None, err.read_text()
            assert time.time() < deadline, "no training step logged"
            time.sleep(0.2)
        workers = _children(proc.pid)
        assert workers  # the simulation pool (and multiprocessing's resource tracker)
        proc.send_signal(signal.SIGTERM)
        t0 = time.time()
        rc = proc.wait(timeout=30)
        stopped_s = time.time() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 128 + signal.SIGTERM, err.read_text()
    assert stopped_s < 20
    state = json.loads((run_dir / "state.json").read_text())
    assert (run_dir / "checkpoint.keras").is_file()
    assert state["step"] >= 50  # the final checkpoint, not one of the (disabled) periodic ones
    stopped = [e for e in _events(run_dir) if e["event"] == "stopped"]
    assert stopped == [dict(stopped[0], signal="SIGTERM", step=state["step"])]
    # no worker outlives the trainer (the resource tracker exits once its pipe closes)
    deadline = time.time() + 10
    while any(_alive(p) for p in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not [p for p in workers if _alive(p)]

    # the same command resumes from the checkpoint and trains on (--stop-at-step: one step)
    again = _train(run_dir, err, "--stop-at-step", str(state["step"] + 1))
    try:
        rc = again.wait(timeout=STARTUP_S)
    finally:
        if again.poll() is None:
            again.kill()
            again.wait()
    assert rc == 0, err.read_text()
    resumed = [e for e in _events(run_dir) if e["event"] == "resume"]
    assert resumed == [dict(resumed[0], step=state["step"])]
    assert json.loads((run_dir / "state.json").read_text())["step"] == state["step"] + 1
