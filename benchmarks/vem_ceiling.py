"""How far above the best Gaussian can any method get on the vEM benchmark? Strong references.

The vEM quality benchmark (``quality_vem.py``) scores restorations of simulated fast scans of
the ISBI 2012 stack against the slow scan itself, which carries its own noise and fine texture.
This script measures, on the same data and split (train rows 0-383, test rows 384-511), what
methods that do not depend on our training recipe reach:

- ``noisy`` and the best-σ 2-D Gaussian (σ picked against the slow scan: an oracle);
- the optimal *linear* filter: a 2-D Wiener filter whose transfer function is the cross
  spectrum of the training pairs over the fast scan's spectrum (128² tiles; fitted on the
  training part, applied to the test part tile by tile);
- Anscombe + BM4D: the generalised Anscombe transform with the simulation's true dose and read
  noise (an oracle of the noise model), BM4D at σ 1, algebraic inverse — the classical
  state of the art for Poisson data;
- a learning curve of the 2.5-D U-Net of ``supervised`` (``scnet_dask.model.slice_unet``)
  trained fast → slow in a plain PyTorch loop (MSE, Adam, random 90° rotations and flips),
  scored on the test part every minute: where the network's PSNR levels off.

    python benchmarks/vem_ceiling.py [--speedup 4] [--n-slow 256] [--seconds 600]
        [--slices 1] [--features 32] [--patch 64] [--batch 16] [--lr 1e-3] [--out FILE]

Prints a markdown table (and writes it to ``--out``). 2-core CPU: ~15 min at the defaults.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from scipy.ndimage import gaussian_filter

from scnet_dask.model.slice_unet import SliceUNet
from scnet_dask.science.fastscan import fast_scan

sys.path.insert(0, str(Path(__file__).parent))
from quality_vem import SHARED, SPLIT_Y  # type: ignore[import-not-found]  # noqa: E402  (the same split)

READ_SIGMA = 0.02  # fast_scan's default read noise (fraction of full scale)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a - b) ** 2)))


def tiles(v: np.ndarray, t: int = 128) -> np.ndarray:
    """(n, t, t) non-overlapping tiles of every section of (z, y, x)."""
    z, y, x = v.shape
    return np.stack(
        [v[k, i : i + t, j : j + t] for k in range(z) for i in range(0, y - t + 1, t)
         for j in range(0, x - t + 1, t)]
    )  # fmt: skip


def wiener(fast: np.ndarray, slow: np.ndarray) -> float:
    """PSNR on the test part of the 2-D linear filter fitted on the training part."""
    ft, st = tiles(fast[:, :SPLIT_Y]), tiles(slow[:, :SPLIT_Y])
    m = ft.mean()
    Ff, Fs = np.fft.fft2(ft - m), np.fft.fft2(st - m)
    h = (np.conj(Ff) * Fs).mean(0) / (np.abs(Ff) ** 2).mean(0)
    te_f, te_s = tiles(fast[:, SPLIT_Y:]), tiles(slow[:, SPLIT_Y:])
    out = np.real(np.fft.ifft2(np.fft.fft2(te_f - m) * h)) + m
    return psnr(out, te_s)


def anscombe_bm4d(fast: np.ndarray, slow: np.ndarray, counts_full_scale: float) -> float:
    """PSNR of generalised Anscombe + BM4D (σ 1) + algebraic inverse on the test part."""
    import bm4d

    c = fast[:, SPLIT_Y:] * counts_full_scale / 255.0
    r = READ_SIGMA * counts_full_scale
    y = 2.0 * np.sqrt(np.maximum(c + 3.0 / 8.0 + r**2, 0.0))
    d = np.asarray(bm4d.bm4d(y.astype(np.float32), 1.0), dtype=np.float64)
    out = (d**2 / 4.0 - 1.0 / 8.0 - r**2) * 255.0 / counts_full_scale
    return psnr(out, slow[:, SPLIT_Y:])


def learning_curve(fast: np.ndarray, slow: np.ndarray, a: argparse.Namespace) -> list[tuple]:
    """(seconds, steps, test PSNR) of the 2.5-D U-Net trained fast → slow, once a minute."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    m, s = float(fast.mean()), float(fast.std())
    fn, sn = ((fast - m) / s).astype(np.float32), ((slow - m) / s).astype(np.float32)
    tr_f, tr_s = fn[:, :SPLIT_Y], sn[:, :SPLIT_Y]
    nz, h, p = fast.shape[0], a.slices // 2, a.patch
    net = SliceUNet(slices=a.slices, features=a.features)
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    test_in = torch.from_numpy(np.ascontiguousarray(fn[None, None, :, SPLIT_Y:]))

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for _ in range(a.batch):
            z = int(rng.integers(nz))
            y0, x0 = int(rng.integers(SPLIT_Y - p + 1)), int(rng.integers(fast.shape[2] - p + 1))
            zi = np.abs(np.arange(z - h, z + h + 1))
            zi = np.where(zi > nz - 1, 2 * (nz - 1) - zi, zi)
            xi, yi = tr_f[zi, y0 : y0 + p, x0 : x0 + p], tr_s[z, y0 : y0 + p, x0 : x0 + p]
            r, flip = int(rng.integers(4)), bool(rng.integers(2))
            xi, yi = np.rot90(xi, r, (1, 2)), np.rot90(yi, r)
            if flip:
                xi, yi = xi[:, :, ::-1], yi[:, ::-1]
            xs.append(xi.copy())
            ys.append(yi.copy())
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))[:, None]

    def score() -> float:
        net.eval()
        with torch.no_grad():
            out = net(test_in)[0, 0].numpy() * s + m
        net.train()
        return psnr(out, slow[:, SPLIT_Y:])

    curve, step, t0, nxt = [], 0, time.perf_counter(), 60.0
    while time.perf_counter() - t0 < a.seconds:
        xb, yb = batch()
        loss = torch.mean((net.centre(xb) - yb) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if time.perf_counter() - t0 >= nxt:
            curve.append((time.perf_counter() - t0, step, score()))
            print(f"  {curve[-1][0]:.0f} s, step {step}: {curve[-1][2]:.2f} dB", flush=True)
            nxt += 60.0
    if not curve or curve[-1][1] != step:
        curve.append((time.perf_counter() - t0, step, score()))
    return curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--speedup", type=float, default=4.0)
    ap.add_argument("--n-slow", type=float, default=256.0)
    ap.add_argument("--seconds", type=float, default=600.0, help="training time of the curve")
    ap.add_argument("--slices", type=int, default=1)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    slow8 = tifffile.imread(SHARED / "vem" / "isbi2012_train_volume.tif")
    slow = slow8.astype(np.float64)
    fast = fast_scan(slow8, a.speedup, n_slow=a.n_slow, seed=0).astype(np.float64)
    te_f, te_s = fast[:, SPLIT_Y:], slow[:, SPLIT_Y:]
    rows = [("noisy", psnr(te_f, te_s), "")]
    best = max(
        (psnr(np.stack([gaussian_filter(f, sg) for f in te_f]), te_s), sg)
        for sg in (0.5, 0.75, 1.0, 1.25, 1.5)
    )
    rows.append(("best-σ 2-D Gaussian (oracle)", best[0], f"σ {best[1]:g} px"))
    rows.append(("optimal linear filter (2-D Wiener, fitted on the training part)",
                 wiener(fast, slow), "128² tiles"))  # fmt: skip
    t0 = time.perf_counter()
    counts = a.n_slow / a.speedup
    rows.append(("Anscombe + BM4D (true dose and read noise)",
                 anscombe_bm4d(fast, slow, counts),
                 f"{time.perf_counter() - t0:.0f} s"))  # fmt: skip
    print("\n".join(f"{n}: {v:.2f} {x}" for n, v, x in rows), flush=True)
    curve = learning_curve(fast, slow, a)
    for sec, step, v in curve:
        rows.append((f"2.5-D U-Net fast → slow, {sec / 60:.0f} min ({step} steps)", v,
                     f"k {a.slices}, {a.features} features, {a.patch}², batch {a.batch}, "
                     f"lr {a.lr:g}"))  # fmt: skip
    lines = [f"Fast scan {a.speedup:g}x, n_slow {a.n_slow:g}; test rows {SPLIT_Y}-511 against "
             "the slow scan (PSNR over 255).", "", "| row | PSNR (dB) | settings |",
             "|---|---|---|"]  # fmt: skip
    lines += [f"| {n} | {v:.2f} | {x} |" for n, v, x in rows]
    text = "\n".join(lines)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
