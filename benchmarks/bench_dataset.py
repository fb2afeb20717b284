"""``denoise --dataset`` against a shell loop of single-volume ``denoise`` calls, in one run.

Makes N tomograms of (z, y, x) float32 MRC in an AreTomo3 layout (``TS_k_Vol.mrc``): the
package's TEM-Simulator crop (48 x 128 x 128), tiled to the shape, with Gaussian noise of a
different seed per tomogram. Then, for each method (``gaussian``; a U-Net checkpoint of SC-Net's
network at 16 features: the network every trained method runs, weights not trained, so the
timing is a trained checkpoint's), it times:

- ``loop``: one ``scnet-dask denoise TS_k_Vol.mrc [CK] out/TS_k.mrc`` process per tomogram
  (what a user writes in a shell loop: start-up, imports, model load and graph paid N times);
- ``dataset``: one ``scnet-dask denoise --dataset DIR [CK] --out-dir out2``;

and checks the outputs are identical. Also: the driver's peak RSS for N/4 vs N tomograms
(psutil, sampled every 50 ms), and ``--cluster local --workers 1`` vs ``2`` (gaussian).

    python benchmarks/bench_dataset.py --count 48 --shape 64,256,256
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np
import psutil
import torch

from scnet_dask.methods.scnet import write_checkpoint
from scnet_dask.model.unet import SCNetUNet

CLI = [sys.executable, "-m", "scnet_dask.cli"]
SAMPLE = Path(__file__).resolve().parents[1] / "scnet_dask" / "data" / "temsim_noisy_crop.mrc"


def make_dataset(root: Path, count: int, shape: tuple[int, int, int]) -> None:
    """``count`` AreTomo3-named tomograms of ``shape`` from the sample crop, noise per seed."""
    root.mkdir(parents=True, exist_ok=True)
    with mrcfile.open(SAMPLE) as m:
        crop = np.asarray(m.data, np.float32)
    reps = [-(-s // c) for s, c in zip(shape, crop.shape, strict=True)]
    base = np.tile(crop, reps)[: shape[0], : shape[1], : shape[2]]
    for k in range(count):
        rng = np.random.default_rng(k)
        vol = base + rng.normal(0, float(base.std()), base.shape).astype(np.float32)
        with mrcfile.new(root / f"TS_{k}_Vol.mrc", overwrite=True) as m:
            m.set_data(vol)
            m.voxel_size = 10.0


def run(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd``; return (seconds, peak RSS in MiB of the process and its children)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ps, peak = psutil.Process(proc.pid), 0.0
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss
            peak = max(peak, rss / 2**20)
        except psutil.Error:
            pass
        time.sleep(0.05)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr.read()[-2000:]}")
    return time.perf_counter() - t0, peak


def same(a: Path, b: Path, count: int) -> bool:
    for k in range(count):
        with mrcfile.open(a / f"TS_{k}.mrc") as x, mrcfile.open(b / f"TS_{k}.mrc") as y:
            if not np.array_equal(x.data, y.data):
                return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=48)
    ap.add_argument("--shape", default="64,256,256")
    ap.add_argument("--loop-count", type=int, default=0, help="tomograms in the loop (0 = all)")
    a = ap.parse_args()
    shape = tuple(int(v) for v in a.shape.split(","))
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        make_dataset(tmp / "ds", a.count, shape)  # type: ignore[arg-type]
        torch.manual_seed(0)
        ck = tmp / "unet16.pt"
        norm = {"noisy": {"mean": 0.0, "std": 1.0, "voxel_size_angstrom": [10.0] * 3}}
        write_checkpoint(ck, SCNetUNet(features=16, upsample=True), norm, {"bench": True})
        n_loop = a.loop_count or a.count
        sub = tmp / "sub"
        make_dataset(sub, n_loop, shape)  # type: ignore[arg-type]
        print(f"| {n_loop} tomograms {shape} | loop s | dataset s | speed-up | identical |")
        print("|---|---|---|---|---|")
        cases = (("gaussian", [], ["--method", "gaussian"]),
                 ("U-Net 16 f", [str(ck)], ["--device", "cpu"]))  # fmt: skip
        for label, ckpt, flags in cases:
            loop, ds = tmp / f"loop_{label[0]}", tmp / f"ds_{label[0]}"
            loop.mkdir()
            t_loop = sum(
                run([*CLI, "denoise", str(sub / f"TS_{k}_Vol.mrc"), *ckpt,
                     str(loop / f"TS_{k}.mrc"), *flags])[0]
                for k in range(n_loop)
            )  # fmt: skip
            t_ds = run([*CLI, "denoise", "--dataset", str(sub), *ckpt, "--out-dir", str(ds),
                        *flags])[0]  # fmt: skip
            ok = same(loop, ds, n_loop)
            print(f"| {label} | {t_loop:.1f} | {t_ds:.1f} | {t_loop / t_ds:.2f}x | {ok} |")
        print()
        small = tmp / "small"
        make_dataset(small, max(1, a.count // 4), shape)  # type: ignore[arg-type]
        _, rss_small = run([*CLI, "denoise", "--dataset", str(small), "--method", "gaussian",
                            "--out-dir", str(tmp / "rs")])  # fmt: skip
        _, rss_big = run([*CLI, "denoise", "--dataset", str(tmp / "ds"), "--method", "gaussian",
                          "--out-dir", str(tmp / "rb")])  # fmt: skip
        print(f"driver peak RSS, gaussian: {a.count // 4} tomograms {rss_small:.0f} MiB, "
              f"{a.count} tomograms {rss_big:.0f} MiB, ratio {rss_big / rss_small:.3f}")
        times = {}
        for w in (1, 2):
            times[w] = run([*CLI, "denoise", "--dataset", str(tmp / "ds"), "--method", "gaussian",
                            "--out-dir", str(tmp / f"w{w}"), "--cluster", "local", "--workers",
                            str(w), "--dashboard-address", ":0"])[0]  # fmt: skip
        print(f"LocalCluster on {a.count} tomograms: 1 worker {times[1]:.1f} s, 2 workers "
              f"{times[2]:.1f} s, speed-up {times[1] / times[2]:.2f}x")


if __name__ == "__main__":
    main()
