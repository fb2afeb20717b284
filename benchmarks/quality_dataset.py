"""Does one model serve a whole dataset? Per-tomogram vs other-tomogram vs K-tomogram training.

Dataset: ``scnet-dask simulate`` of ``temsim/rec_clean.mrc`` (the quality benchmark's rec15:
σ 2 ground truth, re-projection at -60:60:2, noise σ 15, WBP; seed 0), then **split into 3 x 3
sub-volumes along y and x** (80 x 85 x 85 voxels each): nine tomograms of one specimen with
different content, laid out as AreTomo3 writes them (``TS_k_Vol.mrc`` with its even/odd
halves), each with its ground-truth crop. TS_8 is held out of every multi-tomogram training set.

Models, for ``n2n`` (even/odd halves) and SC-Net's default recipe (``scnet``: its Gaussian prior
σ 1 made per tomogram), all at one budget — the same total steps (default 400 steps of
2 x 32³ patches, 16 features, the CLI's learning rate and schedule), every run through
``train --dataset`` (``--tomograms`` picks the set):

| row | trained on |
|---|---|
| own | the tomogram it is applied to (TS_0 for column A, TS_8 for column B) |
| other | TS_1 only (column B: applied to TS_8) |
| K=4 | TS_0, TS_2, TS_4, TS_6 |
| K=8 | TS_0 ... TS_7 |

Column A: applied to TS_0 (a tomogram the K-models trained on); column B: applied to TS_8
(held out). PSNR / SSIM after the affine fit, and Pearson r, against the ground-truth crop;
the noisy volume and the oracle Gaussian (best σ of 0.5-3 picked with the ground truth) beside.
Then the peak RSS of training on 8 vs 32 tomograms (same steps), each a fresh process
(psutil, sampled every 20 ms).

    python benchmarks/quality_dataset.py --work /tmp/qd [--steps 400] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np
import psutil
from scipy import ndimage

from scnet_dask.commands.denoise import denoise
from scnet_dask.commands.simulate import simulate
from scnet_dask.config import DenoiseConfig, TrainConfig
from scnet_dask.engine.train import train
from scnet_dask.io import open_source
from scnet_dask.science.metrics import psnr, ssim

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CLI = [sys.executable, "-m", "scnet_dask.cli"]
SETS = {
    "own": None,
    "other": ["TS_1"],
    "K=4": ["TS_0", "TS_2", "TS_4", "TS_6"],
    "K=8": [f"TS_{i}" for i in range(8)],
}
SIGMAS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)


def _write(path: Path, data: np.ndarray, voxel: float) -> None:
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.ascontiguousarray(data, dtype=np.float32))
        m.voxel_size = voxel


def make_dataset(work: Path) -> Path:
    """Simulate rec15 once and split it into nine AreTomo3-style tomograms (and truths)."""
    ds, gt = work / "dataset", work / "truth"
    if (gt / "TS_8.mrc").exists():
        return ds
    sim = work / "sim"
    if not (sim / "manifest.json").exists():
        simulate(SHARED / "temsim" / "rec_clean.mrc", sim, (15.0,), "-60:60:2", 0, "mrc", True)
    names = {"Vol": "rec_all_sigma15.mrc", "EVN_Vol": "rec_even_sigma15.mrc",
             "ODD_Vol": "rec_odd_sigma15.mrc", "truth": "ground_truth.mrc"}  # fmt: skip
    vols = {k: np.asarray(open_source(sim / v).data, dtype=np.float32) for k, v in names.items()}
    voxel = float(open_source(sim / names["Vol"]).voxel_size_angstrom[-1])
    ds.mkdir(parents=True, exist_ok=True)
    gt.mkdir(parents=True, exist_ok=True)
    _, ny, nx = vols["Vol"].shape
    k = 0
    for iy in range(3):
        for ix in range(3):
            box = (slice(None), slice(iy * ny // 3, (iy + 1) * ny // 3),
                   slice(ix * nx // 3, (ix + 1) * nx // 3))  # fmt: skip
            for suffix in ("Vol", "EVN_Vol", "ODD_Vol"):
                _write(ds / f"TS_{k}_{suffix}.mrc", vols[suffix][box], voxel)
            _write(gt / f"TS_{k}.mrc", vols["truth"][box], voxel)
            k += 1
    return ds


def scores(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM after the affine fit, and Pearson r."""
    r = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    return {"psnr": psnr(a, b), "ssim": ssim(a, b), "corr": r}


def _read(p: Path) -> np.ndarray:
    return np.asarray(open_source(p).data, dtype=np.float32)


def train_model(work: Path, ds: Path, method: str, names: list[str], a: argparse.Namespace) -> Path:
    """A ``train --dataset --tomograms`` run at the budget; its last checkpoint (cached)."""
    run = work / "runs" / f"{method}_{'-'.join(n.split('_')[1] for n in names)}"
    if (run / "done.json").exists():
        return run / "last.pt"
    steps_per_epoch = a.steps // a.epochs
    cfg = TrainConfig.model_validate({
        "dataset": str(ds), "tomograms": ",".join(names), "out": run, "method": method,
        "epochs": a.epochs, "steps_per_epoch": steps_per_epoch, "patch_size": a.patch,
        "batch_size": 2, "features": a.features, "val_patches": 2, "plots": False,
        "device": a.device, "overwrite": True, "seed": 0,
    })  # fmt: skip
    t0 = time.perf_counter()
    train(cfg, show_progress=False)
    (run / "done.json").write_text(json.dumps({"seconds": time.perf_counter() - t0}))
    return run / "last.pt"


def apply(ck: Path, method: str, ds: Path, name: str, out: Path, device: str) -> np.ndarray:
    """The denoised full volume of tomogram ``name`` (cached)."""
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        denoise(DenoiseConfig.model_validate({
            "input": ds / f"{name}_Vol.mrc", "checkpoint": ck, "output": out, "method": method,
            "device": device, "overwrite": True,
        }), show_progress=False)  # fmt: skip
    return _read(out)


def oracle_gaussian(noisy: np.ndarray, truth: np.ndarray) -> tuple[dict[str, float], float]:
    """The best Gaussian σ by PSNR against the truth, and its scores."""
    best: tuple[dict[str, float], float] | None = None
    for s in SIGMAS:
        sc = scores(ndimage.gaussian_filter(noisy, s), truth)
        if best is None or sc["psnr"] > best[0]["psnr"]:
            best = (sc, s)
    assert best is not None
    return best


def quality(work: Path, a: argparse.Namespace) -> list[dict[str, Any]]:
    """The table's rows (one per method and training set) with both columns' scores."""
    ds = make_dataset(work)
    truth = {n: _read(work / "truth" / f"{n}.mrc") for n in ("TS_0", "TS_8")}
    noisy = {n: _read(ds / f"{n}_Vol.mrc") for n in ("TS_0", "TS_8")}
    rows: list[dict[str, Any]] = [
        {"method": "noisy", "set": "", **{c: scores(noisy[n], truth[n])
                                          for c, n in (("A", "TS_0"), ("B", "TS_8"))}},
    ]  # fmt: skip
    gauss = {c: oracle_gaussian(noisy[n], truth[n]) for c, n in (("A", "TS_0"), ("B", "TS_8"))}
    rows.append({"method": "gaussian (oracle σ)", "set": "",
                 "A": gauss["A"][0], "B": gauss["B"][0],
                 "note": f"σ {gauss['A'][1]} / {gauss['B'][1]}"})  # fmt: skip
    for method in a.methods.split(","):
        for label, names in SETS.items():
            row: dict[str, Any] = {"method": method, "set": label}
            for col, target in (("A", "TS_0"), ("B", "TS_8")):
                if label == "other" and col == "A":
                    continue  # a model trained on TS_1 only has no "trained on" column here
                used = names or [target]
                ck = train_model(work, ds, method, used, a)
                out = work / "out" / f"{method}_{label}_{target}.mrc"
                row[col] = scores(apply(ck, method, ds, target, out, a.device), truth[target])
                row[f"train_s_{col}"] = json.loads((ck.parent / "done.json").read_text())["seconds"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def peak_rss(work: Path, count: int, a: argparse.Namespace) -> float:
    """Peak RSS (MiB) of one ``train --dataset`` process over ``count`` tomograms."""
    src = work / f"mem{count}"
    src.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(count)
    for i in range(count):
        p = src / f"T{i:03d}.mrc"
        if not p.exists():
            _write(p, rng.normal(size=(48, 128, 128)).astype(np.float32), 10.0)
    run = work / f"mem_run{count}"
    cmd = [*CLI, "train", "--dataset", str(src), "--out", str(run), "--method", "n2v",
           "--patch-size", "32", "--features", "8", "--epochs", "2", "--steps-per-epoch", "20",
           "--no-plots", "--device", "cpu", "--overwrite", "--train-count", str(count)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # sampled, not ru_maxrss: a child forked from this (large) process inherits its high-water
    # mark until exec; samples count only once the child runs the CLI
    ps, peak = psutil.Process(proc.pid), 0.0
    while proc.poll() is None:
        try:
            if "scnet_dask.cli" in " ".join(ps.cmdline()):
                peak = max(peak, ps.memory_info().rss / 2**20)
        except psutil.Error:
            pass
        time.sleep(0.02)
    if proc.returncode != 0:
        raise SystemExit(f"memory run on {count} tomograms failed: {' '.join(cmd)}")
    return peak


def _cell(sc: dict[str, float] | None) -> str:
    return "—" if sc is None else f"{sc['psnr']:.2f} / {sc['ssim']:.3f} / {sc['corr']:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--methods", default="n2n,scnet")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--memory-only", action="store_true", help="Only the 8 vs 32 RSS figure.")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    rows = [] if a.memory_only else quality(a.work, a)
    lines = [
        f"Budget: {a.steps} steps of 2 x {a.patch}³ patches, {a.features} features, seed 0.",
        "",
        "| model | trained on | A: applied to TS_0 (trained on) PSNR / SSIM / r | "
        "B: applied to TS_8 (held out) PSNR / SSIM / r | train s (A / B) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        secs = " / ".join(f"{r[k]:.0f}" for k in ("train_s_A", "train_s_B") if k in r)
        lines.append(f"| {r['method']} | {r['set']} {r.get('note', '')} | {_cell(r.get('A'))} | "
                     f"{_cell(r.get('B'))} | {secs} |")  # fmt: skip
    if not a.skip_memory:
        m8, m32 = peak_rss(a.work, 8, a), peak_rss(a.work, 32, a)
        lines += ["", f"Peak RSS of train --dataset (n2v, 40 steps): 8 tomograms {m8:.0f} "
                  f"MiB, 32 tomograms {m32:.0f} MiB, ratio {m32 / m8:.3f} (goal ≤ 1.15)"]
    text = "\n".join(lines)
    if a.memory_only:
        text = lines[-1]
        (a.work / "results_memory.md").write_text(text + "\n")
    else:
        (a.work / "results.md").write_text(text + "\n")
        (a.work / "results.json").write_text(json.dumps(rows, indent=1))
    print(text)


if __name__ == "__main__":
    main()
