"""``score``: rank denoising candidates on the user's own data, without ground truth.

Each candidate denoises one half and is compared with the other. For a denoiser ``f`` that
never saw the other half's noise, ``E|f(even) - odd|² = E|f(even) - s|² + E|n_odd|²``: the
half-split error ranks candidates as their true error against the clean signal ``s`` would
(exactly for halves with independent noise on one signal — frame-split halves; approximately
for tilt-split halves, whose signals differ slightly). The error is taken after the best scale
and offset of the output (``half_error_fit``: the quality benchmark's PSNR is measured after the
same fit, and a shrinking filter is not rewarded for shrinking), the raw error beside it; both
directions are averaged. The noise variance of a half, ``E|even - odd|² / 2``, turns it into
the error at a half's noise level. What a user delivers is the candidate applied to the full
volume, with half that noise variance, so each candidate also denoises the first half made
noisier by a second half's noise, and its moments are extrapolated to the full volume's level
(:mod:`scnet_dask.science.halfsplit`): candidates are ranked by that ``mse_estimate`` and its
PSNR over ``R``, the 0.1-99.9 % range of the halves' mean smoothed by σ 1 voxel (a stand-in for
the signal's range; the same for every candidate).

**No leakage**: a trained candidate is scored only with models trained on one half
(``checkpoint_even`` applied to the even half and scored against the odd; ``checkpoint_odd``
the other way); a model whose training inputs are not that half alone is refused. What is
scored is a half-trained model; what a user then delivers is the model trained the usual way
(on both halves or the full volume), which has seen more data: the score ranks the recipe.
A candidate with ``train:`` (a short recipe) is trained here instead, by region split: two
models, each trained on one half of the grid and applied to the other
(:mod:`scnet_dask.commands.score_train`); such candidates are scored after the others, so that
``prior: best`` can name the best-scored Gaussian or Topaz-3D candidate.

Outputs in ``--out``: ``score.csv`` and ``score.md`` (best first), ``slices.png`` (the top
candidates' even half, central z slice); each candidate's result (its row and slice, not its
volumes: disk does not grow with the candidates) is kept in ``.score/`` and a rerun scores only
the candidates not done with these inputs.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from dask_image.ndfilters import gaussian_filter

from scnet_dask.commands.evaluate import MethodSpec
from scnet_dask.commands.score_candidates import (
    DEFAULT_CANDIDATES,
    checked_half_model,
    load_candidates,
)
from scnet_dask.commands.score_report import SCORE_DIR, candidate_slug, write_report
from scnet_dask.commands.score_train import (
    PRIOR_METHODS,
    apply_spec,
    check_train,
    prior_of,
    region_output,
    scored_halves,
)
from scnet_dask.config import ScoreConfig
from scnet_dask.errors import InputError
from scnet_dask.io import open_source
from scnet_dask.io._atomic import partial_path, refuse_overlap
from scnet_dask.io.provenance import volume_attrs
from scnet_dask.io.store import source_signature, write_volume_zarr
from scnet_dask.methods import get
from scnet_dask.methods.runtime import file_sha256
from scnet_dask.science.halfsplit import full_level_mse, half_moments, noisier_half
from scnet_dask.science.metrics import fsc, fsc_eo, resolution_angstrom
from scnet_dask.science.stats import central_box, compute_statistics

__all__ = [
    "DEFAULT_CANDIDATES",
    "candidate_slug",
    "load_candidates",
    "half_noise",
    "halves_of",
    "score",
]

def halves_of(cfg: ScoreConfig) -> tuple[Path, Path]:
    """(even, odd) of a single-volume score; ``--dataset`` scores go through ``score_dataset``."""
    if cfg.even is None or cfg.odd is None:
        raise ValueError(f"a score needs both halves, got even={cfg.even} odd={cfg.odd}")
    return Path(cfg.even), Path(cfg.odd)


def _plan(spec: MethodSpec, cfg: ScoreConfig) -> list[tuple[str, Path, Path, Path | None]]:
    """The scored directions: (label, input half, other half, checkpoint)."""
    even, odd = halves_of(cfg)
    if spec.train is not None:  # trained here, scored by region-split models
        check_train(spec)
        pair = {"even": (even, odd), "odd": (odd, even)}
        return [(f"{h}→{'odd' if h == 'even' else 'even'}", *pair[h], None)
                for h in scored_halves(spec)]  # fmt: skip
    if spec.method == "none" or not get(spec.method).trains:
        return [("even→odd", even, odd, None), ("odd→even", odd, even, None)]
    if spec.checkpoint is not None and spec.checkpoint_even is None:
        raise InputError(
            f"candidate {spec.name!r}: a trained method is scored with models trained on one "
            "half (checkpoint_even, and checkpoint_odd for both directions), not with "
            f"'checkpoint' {spec.checkpoint}, which may have seen both halves' noise"
        )
    dirs: list[tuple[str, Path, Path, Path | None]] = []
    if spec.checkpoint_even is not None:
        checked_half_model(spec.checkpoint_even, even, odd, spec.name)
        dirs.append(("even→odd", even, odd, spec.checkpoint_even))
    if spec.checkpoint_odd is not None:
        checked_half_model(spec.checkpoint_odd, odd, even, spec.name)
        dirs.append(("odd→even", odd, even, spec.checkpoint_odd))
    if not dirs:
        raise InputError(f"candidate {spec.name!r}: method {spec.method} needs checkpoint_even")
    return dirs


def _lazy(path: Path) -> da.Array:
    return open_source(path).data.astype(np.float32)


def _mse(a: da.Array, b: da.Array) -> da.Array:
    d = a.astype(np.float64) - b.rechunk(a.chunks).astype(np.float64)
    return (d * d).mean()


def half_noise(even: Path, odd: Path) -> tuple[float, float]:
    """(noise variance of one half ``E|even - odd|² / 2``, the signal range ``R``); one pass."""
    e, o = _lazy(even), _lazy(odd)
    if tuple(e.shape) != tuple(o.shape):
        raise InputError(f"{odd}: grid {tuple(o.shape)} differs from {even}'s {tuple(e.shape)}")
    var = float(_mse(e, o).compute()) / 2.0
    smooth = gaussian_filter((e + o.rechunk(e.chunks)) * np.float32(0.5), sigma=1.0)
    st = compute_statistics(smooth)
    return var, float(st["p99.9"] - st["p0.1"])


def _identity(
    spec: MethodSpec, cfg: ScoreConfig, prior: MethodSpec | None = None, version: int = 3
) -> str:
    """What a candidate's result depends on: its spec (and prior's), the halves, checkpoints.

    ``version``: of what a row holds (2: the fitted error, 3: the full volume's level); its
    kept volumes and region runs are stamped with version 2 (what they hold is unchanged).
    """
    cks = [spec.checkpoint_even, spec.checkpoint_odd, spec.checkpoint]
    blob = json.dumps({
        "version": version,
        "spec": spec.model_dump(mode="json"),
        "prior": prior.model_dump(mode="json") if prior is not None else None,
        "halves": [source_signature(p) for p in halves_of(cfg)],
        "checkpoints": [file_sha256(c) if c else None for c in cks],
        "chunks": cfg.chunks, "fsc_edge": cfg.fsc_edge, "keep_volumes": cfg.keep_volumes,
    }, sort_keys=True, default=str)  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()


def _denoised(
    spec: MethodSpec, src: Path, out: Path, ck: Path | None, cfg: ScoreConfig, key: str
) -> Path:
    """The candidate's output for one half (a kept one of this identity is reused)."""
    if spec.method == "none":
        return src
    stamp = out.with_name(out.name + ".identity")
    if cfg.keep_volumes and out.exists() and stamp.is_file() and stamp.read_text() == key:
        return out
    stamp.unlink(missing_ok=True)
    apply_spec(spec, src, out, ck, cfg.chunks, cfg.device)
    if cfg.keep_volumes:
        stamp.write_text(key)
    return out


def _resolve_prior(
    spec: MethodSpec, specs: list[MethodSpec], rows: list[dict[str, Any]]
) -> MethodSpec | None:
    """The prior candidate of a ``train:`` candidate (``best``: the best-scored of its kind)."""
    if spec.train is None or "prior" not in get(spec.method).inputs:
        return None
    want = str(spec.train.get("prior", "best"))
    by_name = {s.name: s for s in specs}
    if want == "best":
        kinds = [r for r in rows if r["method"] in PRIOR_METHODS]
        if not kinds:
            raise InputError(f"candidate {spec.name!r}: prior: best needs a "
                             f"{' or '.join(PRIOR_METHODS)} candidate to choose from")  # fmt: skip
        want = min(kinds, key=lambda r: r["mse_estimate"])["candidate"]
    if want not in by_name or by_name[want].train is not None:
        raise InputError(f"candidate {spec.name!r}: prior {want!r} is not an untrained "
                         f"candidate (candidates: {', '.join(by_name)})")  # fmt: skip
    return by_name[want]


def _noisier(cfg: ScoreConfig, half: str) -> Path:
    """``half`` with a second half's noise added (:func:`noisier_half`), kept in ``.score/``."""
    even, odd = halves_of(cfg)
    src, other = (even, odd) if half == "even" else (odd, even)
    out = Path(cfg.out) / SCORE_DIR / f"noisier_{half}.zarr"
    stamp = out.with_name(out.name + ".identity")
    key = json.dumps([source_signature(src), source_signature(other), 1], default=str)
    if out.exists() and stamp.is_file() and stamp.read_text() == key:
        return out
    shutil.rmtree(out, ignore_errors=True)
    vol = open_source(src)
    data, axis = noisier_half(vol.data, open_source(other).data)
    part = partial_path(out)
    shutil.rmtree(part, ignore_errors=True)
    attrs = volume_attrs(part, "score-noisier-half", vol, other=str(other), shift_axis=axis)
    write_volume_zarr(data, part, vol.voxel_size_angstrom, attrs, cfg.chunks, 1, None, False)
    part.rename(out)
    stamp.write_text(key)
    return out


def _full_level(
    cfg: ScoreConfig, row: dict[str, Any], noise: float, moments: list[dict[str, float]],
    first: tuple[str, Path, Path, Path | None], den_of: Callable[[Path, str, Path | None], Path],
) -> None:  # fmt: skip
    """Score the candidate once more at twice a half's noise; the full volume's estimates.

    ``moments`` are those of the scored directions, ``first`` the first of them (label, input
    half, other half, checkpoint); ``den_of(src, half, ck)`` denoises ``src`` as it did.
    """
    label, _, other, ck = first
    half = "even" if label.startswith("even") else "odd"
    m2 = half_moments(_lazy(den_of(_noisier(cfg, half), half, ck)), _lazy(other))
    mean = {k: float(np.mean([m[k] for m in moments])) for k in moments[0]}
    row["half_error"], row["half_error_fit"] = mean["raw"], mean["fitted"]
    row["noisier_error_fit"] = m2["fitted"]
    row["half_mse_estimate"] = mean["fitted"] - noise
    row["mse_estimate"], row["raw_mse_estimate"] = full_level_mse(mean, moments[0], m2, noise)


def _psnr(rng: float, mse: float) -> float:
    return 10 * math.log10(rng * rng / mse) if mse > 0 else math.inf


def _score_one(
    spec: MethodSpec, cfg: ScoreConfig, noise: float, rng: float, key: str,
    prior: MethodSpec | None = None, keep_even: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Denoise each half the spec allows and measure it against the other half."""
    t0 = time.perf_counter()
    work = Path(cfg.out) / SCORE_DIR / "volumes"
    work.mkdir(parents=True, exist_ok=True)
    row: dict[str, Any] = {"candidate": spec.name, "method": spec.method}
    moments: list[dict[str, float]] = []
    outs: dict[str, Path] = {}
    scored: list[str] = []
    even, odd = halves_of(cfg)
    slug = candidate_slug(spec.name)
    tw = Path(cfg.out) / SCORE_DIR / "train" / slug
    prior_even = None
    if spec.train is not None:  # region runs of this identity are resumed, others cleared
        stamp = tw / "identity"
        if not (stamp.is_file() and stamp.read_text() == key):
            shutil.rmtree(tw, ignore_errors=True)
            tw.mkdir(parents=True)
            stamp.write_text(key)
    if prior is not None:
        kept = work / f"{candidate_slug(prior.name)}_even.zarr"  # its scored even output
        prior_even = kept if kept.exists() else prior_of(
            prior, even, tw / "prior_even.zarr", cfg.chunks, cfg.device)  # fmt: skip
        row["prior"] = prior.name

    def den_of(src: Path, half: str, ck: Path | None, tag: str = "") -> Path:
        name = work / f"{slug}_{half}{tag}.zarr"
        if spec.train is not None:
            return region_output(spec, half, {"even": even, "odd": odd}, prior_even, name, tw,
                                 cfg.chunks, cfg.device, src if tag else None)  # fmt: skip
        return _denoised(spec, src, name, ck, cfg, key)

    plan = _plan(spec, cfg)
    for label, src, other, ck in plan:
        half = "even" if label.startswith("even") else "odd"
        outs[half] = den = den_of(src, half, ck)
        moments.append(half_moments(_lazy(den), _lazy(other)))
        row[f"error_{half}"] = moments[-1]["raw"]
        what = f"{Path(ck).name if ck else 'region models' if spec.train else spec.method}"
        scored.append(f"{what} on {half}" + (f" (prior: {prior.name})" if prior else ""))
    _full_level(cfg, row, noise, moments, plan[0], lambda s, h, c: den_of(s, h, c, "_noisier"))
    row["psnr_half_estimate"] = _psnr(rng, row["half_mse_estimate"])
    row["psnr_estimate"] = _psnr(rng, row["mse_estimate"])
    row["fsc_0143_angstrom"] = row["fsc_05_angstrom"] = math.nan
    if len(outs) == 2:
        e, o = _lazy(outs["even"]), _lazy(outs["odd"])
        box = central_box(tuple(e.shape), cfg.fsc_edge)
        f, c = fsc(e, o, open_source(even).voxel_size_angstrom, region=box)
        row["fsc_0143_angstrom"] = resolution_angstrom(f, fsc_eo(c), 0.143)
        row["fsc_05_angstrom"] = resolution_angstrom(f, fsc_eo(c), 0.5)
    lazy = _lazy(outs.get("even", next(iter(outs.values()))))
    np.save(Path(cfg.out) / SCORE_DIR / f"{slug}.npy", lazy[lazy.shape[0] // 2].compute())
    for tag in ("even", "odd", "even_noisier", "odd_noisier"):  # the row is kept, not volumes
        if (tag == "even" and keep_even) or cfg.keep_volumes:
            continue  # a prior the trained candidates may take
        shutil.rmtree(work / f"{slug}_{tag}.zarr", ignore_errors=True)
        (work / f"{slug}_{tag}.zarr.identity").unlink(missing_ok=True)
    shutil.rmtree(tw, ignore_errors=True)
    row["scored"] = "; ".join(scored)
    row["seconds"] = time.perf_counter() - t0
    return row


def score(cfg: ScoreConfig) -> list[dict[str, Any]]:
    """Score every candidate of ``cfg`` on its halves; rows best first (lowest half error).

    Raises
    ------
    InputError
        Halves on different grids, a bad candidate file, a trained candidate that could have
        seen the scoring half's noise.

    """
    out = Path(cfg.out)
    refuse_overlap(out, *halves_of(cfg))
    specs = load_candidates(cfg.candidates)
    for spec in specs:  # every leakage refusal before any work
        _plan(spec, cfg)
    noise, rng = half_noise(*halves_of(cfg))
    done = out / SCORE_DIR
    done.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    wants_prior = any(s.train is not None and "prior" in get(s.method).inputs for s in specs)
    # trained-here candidates last: 'prior: best' chooses among the scored filters
    for spec in sorted(specs, key=lambda s: s.train is not None):
        prior = _resolve_prior(spec, specs, rows)
        key = _identity(spec, cfg, prior)
        cache = done / f"{candidate_slug(spec.name)}.json"
        if cache.exists() and not cfg.overwrite:
            old = json.loads(cache.read_text())
            if old.get("identity") == key:
                rows.append(old["row"])
                continue
        keep = wants_prior and spec.train is None and spec.method in PRIOR_METHODS
        row = _score_one(spec, cfg, noise, rng, _identity(spec, cfg, prior, 2), prior, keep)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"identity": key, "row": row}))
        tmp.replace(cache)
        rows.append(row)
    rows.sort(key=lambda r: r["mse_estimate"])
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    if not cfg.keep_volumes:  # the priors kept for the trained candidates, the noisier halves
        for spec in specs:
            shutil.rmtree(done / "volumes" / f"{candidate_slug(spec.name)}_even.zarr",
                          ignore_errors=True)  # fmt: skip
        for half in ("even", "odd"):
            shutil.rmtree(done / f"noisier_{half}.zarr", ignore_errors=True)
            (done / f"noisier_{half}.zarr.identity").unlink(missing_ok=True)
    write_report(rows, out, cfg, noise, rng)
    return rows
