"""Does ``score`` rank candidates as the ground truth does? Spearman ρ and the PSNR lost.

For every dataset with even/odd halves and a ground truth, ``score`` ranks the default
candidates (identity, Gaussian σ 0.5/1/1.5/2/3, low-pass 30/60 Å, Topaz-3D: 9) by their
estimated error on the full volume (the half-split error at a half's noise level and at twice
it, extrapolated to the full volume's level). The truth: each candidate's PSNR (after the
affine fit, as the quality benchmark reports it) against the reference,

- ``halves``: of the very outputs the score measured (each half denoised), averaged;
- ``full``: of the candidate applied to the full volume — what a user then delivers.

Reported per dataset: Spearman ρ between the score's ranking at a half's level and the truth
of the halves, between the score's ranking and the truth of the full volume, and the PSNR lost
by delivering the score's pick instead of the true best (on the full volume); the same against
the noise-free reconstruction of the projections (the signal the halves carry, missing wedge
included: what a denoiser can at best recover; temsim's reference is one); and the ranking at
a half's level alone (the score before the extrapolation to the full volume).

Datasets:
- frame-split halves (independent noise on the same projections): ``temsim`` (two detector
  reads of one tilt series, WBP; reference ``rec_clean``) and ``KINDσ-frame`` (``simulate``'s
  projections of ``temsim/rec_clean.mrc`` — ``rec`` — or of ``real/14pf_MT.tif`` — ``mt`` —
  with two independent noise draws of σ·√2 each on every tilt, WBP of each: their mean has the
  noise of the tilt-split dataset of the same σ): rec10/15/20-frame, mt10/15/20-frame;
- tilt-split halves (what ``simulate`` writes: even / odd tilts): ``rec10``, ``rec15``,
  ``rec20``, ``mt10``, ``mt15``, ``mt20``.

Results accumulate in ``WORK/results.json`` (a dataset already there is not rerun unless
``--rerun``); ``WORK/results.md`` is the table of all of them.

    python benchmarks/score_validation.py --work /tmp/sv [--datasets temsim,rec15]
    python benchmarks/score_validation.py --work /tmp/sv --haadf   # the real HAADF series
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import yaml
from scipy import stats

from scnet_dask.commands.auto import auto_candidates
from scnet_dask.commands.denoise import denoise
from scnet_dask.commands.evaluate import MethodSpec
from scnet_dask.commands.score import candidate_slug, score
from scnet_dask.commands.score_train import prior_of, train_delivered
from scnet_dask.commands.simulate import parse_tilts, simulate
from scnet_dask.config import DenoiseConfig, ScoreConfig
from scnet_dask.io import open_source
from scnet_dask.science.metrics import psnr
from scnet_dask.science.recon import project, wbp

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
sys.path.insert(0, str(Path(__file__).parent))
from fsc_eo import haadf_halves, half_zarr  # type: ignore[import-not-found]  # noqa: E402
from quality_dataset import _write  # type: ignore[import-not-found]  # noqa: E402
from quality_temsim import mean_mrc  # type: ignore[import-not-found]  # noqa: E402

ALL = ("temsim,rec10-frame,rec15-frame,rec20-frame,mt10-frame,mt15-frame,mt20-frame,"
       "rec10,rec15,rec20,mt10,mt15,mt20")


def _read(p: Path) -> np.ndarray:
    return np.asarray(open_source(p).data, dtype=np.float32)


def _simulated(work: Path, kind: str) -> Path:
    sim = work / f"sim_{kind}"
    src = {"rec": SHARED / "temsim" / "rec_clean.mrc", "mt": SHARED / "real" / "14pf_MT.tif"}
    if not (sim / "manifest.json").exists():
        simulate(src[kind], sim, (10.0, 15.0, 20.0), "-60:60:2", 0, "mrc", True)
    return sim


def _clean_rec(work: Path, kind: str) -> Path:
    """The noise-free WBP of ``simulate``'s projections (all tilts): the signal of the full volume.

    What a denoiser can at best recover (missing wedge included), as temsim's ``rec_clean``.
    """
    sim = _simulated(work, kind)
    out = sim / "clean_rec.mrc"
    if not out.exists():
        gt = open_source(sim / "ground_truth.mrc")
        angles = parse_tilts("-60:60:2")
        ts = project(gt.data.astype(np.float32), angles, slab=32)
        lo, hi = da.compute(ts.min(), ts.max())
        ts = ((ts - lo) * (255.0 / float(hi - lo))).astype(np.float32)
        rec = np.asarray(wbp(ts, angles, int(gt.data.shape[0]), slab=32).compute())
        _write(out, rec, float(gt.voxel_size_angstrom[-1]))
    return out


def _frame_split(work: Path, kind: str, sigma: float) -> dict[str, Path]:
    """``simulate``'s projections of ``kind`` with two independent noise draws (σ·√2 each).

    Both halves share every tilt (frame-split-like): the mean of their reconstructions has the
    noise of the tilt-split dataset of the same σ.
    """
    d = work / f"{kind}{sigma:g}-frame"
    out = {"even": d / "even.mrc", "odd": d / "odd.mrc", "full": d / "full.mrc",
           "reference": _simulated(work, kind) / "ground_truth.mrc",
           "clean": _clean_rec(work, kind)}  # fmt: skip
    if out["full"].exists():
        return out
    d.mkdir(parents=True, exist_ok=True)
    gt = open_source(out["reference"])
    angles = parse_tilts("-60:60:2")
    ts = project(gt.data.astype(np.float32), angles, slab=32)
    lo, hi = da.compute(ts.min(), ts.max())
    ts = ((ts - lo) * (255.0 / float(hi - lo))).astype(np.float32)
    nz = int(gt.data.shape[0])
    halves = []
    for name, seed in (("even", 11), ("odd", 12)):
        rng = da.random.default_rng(seed)
        noise = rng.normal(0.0, sigma * np.sqrt(2.0), size=ts.shape, chunks=ts.chunks)
        rec = np.asarray(wbp((ts + noise).astype(np.float32), angles, nz, slab=32).compute())
        _write(out[name], rec, float(gt.voxel_size_angstrom[-1]))
        halves.append(rec)
    _write(out["full"], (halves[0] + halves[1]) / 2, float(gt.voxel_size_angstrom[-1]))
    return out


def dataset(work: Path, name: str) -> dict[str, Path]:
    """even, odd, full and reference paths of one dataset."""
    if name == "temsim":
        t, d = SHARED / "temsim", work / "temsim"
        d.mkdir(parents=True, exist_ok=True)
        if not (d / "full.mrc").exists():
            mean_mrc(t / "rec_even.mrc", t / "rec_odd.mrc", d / "full.mrc")
        return {"even": t / "rec_even.mrc", "odd": t / "rec_odd.mrc", "full": d / "full.mrc",
                "reference": t / "rec_clean.mrc", "clean": t / "rec_clean.mrc"}  # fmt: skip
    if name.endswith("-frame"):
        return _frame_split(work, name[:-8], float(name[-8:-6]))
    kind, sigma = name[:-2], name[-2:]
    sim = _simulated(work, kind)
    return {"even": sim / f"rec_even_sigma{sigma}.mrc", "odd": sim / f"rec_odd_sigma{sigma}.mrc",
            "full": sim / f"rec_all_sigma{sigma}.mrc",
            "reference": sim / "ground_truth.mrc", "clean": _clean_rec(work, kind)}  # fmt: skip


def _full_output(
    spec: dict[str, Any], full: Path, out: Path, device: str, chunks: int = 64
) -> Path:
    if spec["method"] == "none":
        return full
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        opts = {k: v for k, v in spec.items() if k not in ("name",)}
        denoise(DenoiseConfig.model_validate({"input": full, "output": out, "overwrite": True,
                                              "device": device, "chunks": chunks, **opts}),
                show_progress=False)  # fmt: skip
    return out


def _trained_full(spec: dict[str, Any], row: dict[str, Any], specs: dict[str, Any],
                  data: dict[str, Path], d: Path, device: str) -> Path:  # fmt: skip
    """A ``train:`` candidate's recipe trained on the whole data, applied to the full volume.

    Its run and output are named by the recipe and its prior (``prior: best`` may pick another).
    """
    prior = f"_prior_{candidate_slug(row['prior'])}" if row.get("prior") else ""
    tag = f"{candidate_slug(spec['name'])}{prior}"
    out = d / f"{tag}.zarr"
    if out.exists():
        return out
    d.mkdir(parents=True, exist_ok=True)
    ms = MethodSpec(**spec)
    if ms.method == "n2n":
        inputs = {h: half_zarr(data[h], d, h) for h in ("even", "odd")}
    else:
        inputs = {"noisy": half_zarr(data["full"], d, "full")}
        if row.get("prior"):
            inputs["prior"] = prior_of(MethodSpec(**specs[row["prior"]]), inputs["noisy"],
                                       d / f"full{prior}.zarr", 64, device)  # fmt: skip
    ck = train_delivered(ms, inputs, d / f"run_{tag}", device)
    denoise(DenoiseConfig(input=data["full"], output=out, checkpoint=ck, method=ms.method,
                          device=device, chunks=64, overwrite=True), show_progress=False)
    return out


def _agreement(rows: list[dict[str, Any]], error: str, truth: str) -> tuple[float, float]:
    """(Spearman ρ of the ranking by ``error`` (lower first) against ``truth`` (higher better),
    the ``truth`` lost by picking the lowest ``error`` instead of the highest ``truth``)."""
    rho = float(stats.spearmanr([-r[error] for r in rows], [r[truth] for r in rows]).statistic)
    pick = min(rows, key=lambda r: r[error])
    return rho, max(r[truth] for r in rows) - pick[truth]


def validate(
    work: Path, name: str, device: str, trained: int = 0, chunks: int = 64
) -> dict[str, Any]:
    """The score's table for ``name`` beside the true PSNRs; ρ and the PSNR lost.

    With ``trained`` > 0 the candidates include ``denoise --method auto``'s short n2n and
    SC-Net of that many steps (scored by region-split models; their truth on the full volume is
    the recipe trained on the whole data).
    """
    data = dataset(work, name)
    tag = f"-trained{trained}" if trained else ""
    d = work / "score" / f"{name}{tag}"
    cands = auto_candidates(trained)
    base = work / "score" / name
    if trained and base.is_dir() and not d.exists():  # the filters' rows and volumes, reused
        shutil.copytree(base, d)
    d.mkdir(parents=True, exist_ok=True)
    (d / "candidates.yaml").write_text(yaml.safe_dump(cands, allow_unicode=True, sort_keys=False))
    t0 = time.perf_counter()
    rows = score(ScoreConfig(even=data["even"], odd=data["odd"], out=d, keep_volumes=True,
                             device=device, candidates=d / "candidates.yaml",
                             chunks=chunks))  # fmt: skip
    seconds = time.perf_counter() - t0
    ref, clean = _read(data["reference"]), _read(data["clean"])
    specs = {c["name"]: c for c in cands}
    for r in rows:
        vols = d / ".score" / "volumes"
        slug = candidate_slug(r["candidate"])
        halves = [data[h] if r["method"] == "none" else vols / f"{slug}_{h}.zarr"
                  for h in ("even", "odd")]  # fmt: skip
        r["psnr_halves"] = float(np.mean([psnr(_read(h), ref) for h in halves if h.exists()]))
        if "train" in specs[r["candidate"]]:
            t1 = time.perf_counter()
            full = _trained_full(specs[r["candidate"]], r, specs, data,
                                 work / "full" / f"{name}{tag}", device)  # fmt: skip
            r["deliver_seconds"] = time.perf_counter() - t1  # train on all, denoise the full
        else:
            full = _full_output(specs[r["candidate"]], data["full"],
                                work / "full" / name / f"{slug}.zarr", device,
                                chunks)  # fmt: skip
        r["psnr_full"] = psnr(_read(full), ref)
        r["psnr_full_clean"] = psnr(_read(full), clean)
    rho_h, _ = _agreement(rows, "half_error_fit", "psnr_halves")  # a half's level, its truth
    rho_f, lost = _agreement(rows, "mse_estimate", "psnr_full")  # the score: the full volume's
    rho_c, lost_c = _agreement(rows, "mse_estimate", "psnr_full_clean")
    rho_hl, lost_hl = _agreement(rows, "half_error_fit", "psnr_full")  # before extrapolation
    return {"dataset": f"{name}{tag}", "rho_halves": rho_h, "rho_full": rho_f, "lost_db": lost,
            "pick": min(rows, key=lambda r: r["mse_estimate"])["candidate"],
            "true_best": max(rows, key=lambda r: r["psnr_full"])["candidate"],
            "score_seconds": seconds, "chunks": chunks,
            "rho_clean": rho_c, "lost_clean_db": lost_c,
            "rho_half_level": rho_hl, "lost_half_level_db": lost_hl,
            "rows": [{k: r.get(k) for k in ("candidate", "mse_estimate", "half_error_fit",
                                            "noisier_error_fit", "psnr_estimate",
                                            "psnr_half_estimate", "psnr_halves", "psnr_full",
                                            "psnr_full_clean",
                                            "seconds", "deliver_seconds", "prior")}
                     for r in rows]}  # fmt: skip


def haadf(work: Path, device: str, chunks: int = 64) -> str:
    """``score``'s table on the real HAADF tilt series (even / odd tilts through our WBP)."""
    d = work / "haadf"
    d.mkdir(parents=True, exist_ok=True)
    h = haadf_halves(d, 128)
    score(ScoreConfig(even=h["even"], odd=h["odd"], out=d / "score", device=device,
                      chunks=chunks))
    return (d / "score" / "score.md").read_text()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--datasets", default=ALL)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rerun", action="store_true", help="Rerun datasets already in results.json.")
    ap.add_argument("--trained", type=int, default=0, metavar="STEPS",
                    help="Add --method auto's short n2n and SC-Net of STEPS steps "
                    "(rows NAME-trainedSTEPS).")
    ap.add_argument("--haadf", action="store_true",
                    help="Only score the real HAADF series (no ground truth): the README's table.")
    ap.add_argument("--chunks", type=int, default=64,
                    help="Tile core of every denoise (Topaz-3D's blended tiles of core 64 "
                    "compute 8x the volume, of 128 about 3.4x).")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    if a.haadf:
        print(haadf(a.work, a.device, a.chunks))
        return
    store = a.work / "results.json"
    done = {r["dataset"]: r for r in json.loads(store.read_text())} if store.exists() else {}
    for name in filter(None, a.datasets.split(",")):  # --datasets "": only the table
        key = f"{name}-trained{a.trained}" if a.trained else name
        if key in done and not a.rerun:
            continue
        res = validate(a.work, name, a.device, a.trained, a.chunks)
        print(json.dumps({k: v for k, v in res.items() if k != "rows"}), flush=True)
        # re-read: another run on this work folder (other datasets) may have written meanwhile
        done = {r["dataset"]: r for r in json.loads(store.read_text())} if store.exists() else {}
        done[key] = res
        tmp = store.with_suffix(".tmp")
        tmp.write_text(json.dumps(list(done.values()), indent=1))
        tmp.replace(store)
    order = ALL.split(",")
    results = sorted(done.values(), key=lambda r: (order.index(r["dataset"].split("-trained")[0])
                                                   if r["dataset"].split("-trained")[0] in order
                                                   else len(order), r["dataset"]))
    nan = float("nan")
    lines = ["| dataset | halves | ρ, half level | ρ, full | pick | true best (full) | "
             "PSNR lost (dB) | ρ, full vs noise-free rec. | lost vs noise-free rec. (dB) | "
             "ρ, full, ranked at half level | PSNR lost, ranked at half level | score s ¹ |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        base = r["dataset"].split("-trained")[0]
        split = "frame" if base == "temsim" or base.endswith("-frame") else "tilt"
        lines.append(f"| {r['dataset']} | {split} | {r['rho_halves']:.3f} | {r['rho_full']:.3f} "
                     f"| {r['pick']} | {r['true_best']} | {r['lost_db']:.2f} | "
                     f"{r.get('rho_clean', nan):.3f} | {r.get('lost_clean_db', nan):.2f} | "
                     f"{r.get('rho_half_level', nan):.3f} | "
                     f"{r.get('lost_half_level_db', nan):.2f} | "
                     f"{sum(x.get('seconds') or 0 for x in r['rows']):.0f} |")
    lines += ["", "¹ the candidates' own scoring times, summed (from the run that scored them)."]
    for r in results:
        lines += ["", f"#### {r['dataset']}", "",
                  "| candidate | PSNR estimate, full | PSNR estimate, half | true PSNR full | "
                  "true PSNR full vs noise-free rec. | true PSNR halves | half error (fitted) | "
                  "at 2x noise (fitted) |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        lines += [f"| {x['candidate']} | {x['psnr_estimate']:.2f} | "
                  f"{x.get('psnr_half_estimate', nan):.2f} | {x['psnr_full']:.2f} | "
                  f"{x.get('psnr_full_clean', nan):.2f} | "
                  f"{x['psnr_halves']:.2f} | {x['half_error_fit']:.5g} | "
                  f"{x.get('noisier_error_fit', nan):.5g} |" for x in r["rows"]]
    text = "\n".join(lines)
    (a.work / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
