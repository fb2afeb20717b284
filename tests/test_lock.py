"""One writer per output: a second run is refused at once; a dead run's lock is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr

from scnet_dask.errors import OutputError
from scnet_dask.io import open_source
from scnet_dask.io.lock import lock_path, output_lock
from tests.conftest import run_cli, write_mrc
from tests.test_denoise import make_checkpoint, structured


def _cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "scnet_dask.cli", *map(str, args)]


def _race(cmd: list[str]) -> tuple[subprocess.CompletedProcess[str], str]:
    """Start two identical runs at once; return the winner and the loser's stderr.

    Exactly one must succeed, and the other must fail with one line naming the lock.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    done = [(p, *p.communicate(timeout=600)) for p in procs]
    codes = sorted(p.returncode for p, _, _ in done)
    assert codes == [0, 1], [(p.returncode, err[-500:]) for p, _, err in done]
    out, err = next((o, e) for p, o, e in done if p.returncode == 0)
    winner = subprocess.CompletedProcess(cmd, 0, out, err)
    loser = next(e for p, _, e in done if p.returncode == 1)
    lines = [ln for ln in loser.splitlines() if ln.startswith("scnet-dask: error")]
    assert len(lines) == 1 and "another run is writing this output" in lines[0], loser
    return winner, lines[0]


def test_two_converts_into_one_output(tmp_path):
    src = write_mrc(tmp_path / "v.mrc", structured((128, 256, 256), seed=1))
    out = tmp_path / "out.zarr"
    _, err = _race(_cli("convert", src, out, "--chunks", "16"))
    assert str(out) in err and "pid" in err
    got = np.asarray(open_source(out).data)
    assert np.array_equal(got, np.asarray(open_source(src).data))
    assert not lock_path(out).exists()


def test_two_denoises_into_one_output(tmp_path):
    src = write_mrc(tmp_path / "v.mrc", structured((48, 96, 96), seed=2))
    ck = make_checkpoint(tmp_path / "c.pt", features=4)
    out = tmp_path / "den.zarr"
    _race(_cli("denoise", src, ck, out, "--chunks", "16", "--device", "cpu"))
    den = zarr.open_group(str(out))["0"][...]
    assert den.shape == (48, 96, 96) and np.isfinite(den).all()


def test_a_live_runs_lock_refuses_a_second_writer_at_once(tmp_path, capsys):
    src = write_mrc(tmp_path / "v.mrc", structured((16, 32, 32), seed=5))
    out = tmp_path / "o.zarr"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom scnet_dask.io.lock import output_lock\n"
         "with output_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)",
         str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        t0 = time.time()
        code, _, err = run_cli(["convert", src, out, "--chunks", "16"], capsys)
    finally:
        holder.kill()
        holder.wait()
    assert code == 1 and "another run is writing this output" in err
    assert f"pid {holder.pid}" in err
    assert time.time() - t0 < 5 and not out.exists()
    assert not (tmp_path / ".o.zarr.partial").exists()


def test_a_dead_runs_lock_is_taken_over(tmp_path, capsys):
    src = write_mrc(tmp_path / "v.mrc", structured((16, 32, 32), seed=3))
    out = tmp_path / "o.zarr"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)  # fmt: skip
    record = {"host": socket.gethostname(), "pid": int(dead.stdout), "started": 0.0,
              "command": "scnet-dask convert (killed)"}  # fmt: skip
    lock_path(out).write_text(json.dumps(record))
    code, _, err = run_cli(["convert", src, out, "--chunks", "16"], capsys)
    assert code == 0, err
    assert "taking over the lock of a run that no longer runs" in err
    assert not lock_path(out).exists()


def test_a_live_lock_of_another_host_is_refused(tmp_path):
    target = tmp_path / "x.zarr"
    record = {"host": "elsewhere.example", "pid": 1, "command": "scnet-dask denoise ..."}
    lock_path(target).write_text(json.dumps(record))
    with pytest.raises(OutputError, match="elsewhere.example.*remove"):
        with output_lock(target):
            pass
    assert lock_path(target).exists()  # not ours to remove


def test_the_lock_is_reentrant_and_released(tmp_path):
    target = tmp_path / "y.mrc"
    with output_lock(target) as a:
        with output_lock(target) as b:
            assert a == b and a.exists()
        assert a.exists()
    assert not lock_path(target).exists()


@pytest.mark.slow  # the same lock as convert and denoise (tested above), ~20 s
def test_training_twice_into_one_run_folder(tmp_path):
    src = write_mrc(tmp_path / "v.mrc", structured((32, 64, 64), seed=4))
    vol = tmp_path / "v.zarr"
    assert subprocess.run(_cli("convert", src, vol, "--chunks", "16")).returncode == 0
    run = tmp_path / "run"
    cmd = _cli("train", vol, "--method", "n2v", "--out", run, "--patch-size", "16",
               "--features", "4", "--epochs", "1", "--steps-per-epoch", "60",
               "--val-patches", "1", "--device", "cpu", "--no-plots")  # fmt: skip
    _race(cmd)
    assert (run / "last.pt").exists()
