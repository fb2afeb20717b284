"""``denoise --method auto``: score the candidates on the input's halves, denoise with the best.

The candidates (``score``'s default set plus a short n2n and a short SC-Net of
``--auto-steps``, or ``--candidates``) are scored in a work folder beside the output
(``.NAME.score/``, resumable per candidate, removed once the output is complete); the winner —
the lowest half-split error among the candidates that can be delivered — denoises INPUT, and
the whole score table goes into the output's provenance and the log. The pick is never worse,
by the score, than any baseline it scored.

A ``train:`` candidate (:mod:`scnet_dask.commands.score_train`) is scored with region-split
models trained on half the data; if it wins, its recipe is trained the usual way on the whole
input (n2n on ``--even``/``--odd``; a single-volume method on INPUT with its prior candidate
applied to INPUT), INPUT is denoised with that model, and the run folder is kept beside the
output as ``STEM_auto_model/`` (``best.pt``/``last.pt``, ``config.yaml``) for the rest of the
dataset. Candidates with checkpoints are scored but not delivered (their models saw other
data); the identity is never delivered, and a warning says when it scored best.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import yaml

from scnet_dask.commands.convert import convert
from scnet_dask.commands.denoise import denoise
from scnet_dask.commands.evaluate import MethodSpec
from scnet_dask.commands.score import DEFAULT_CANDIDATES, load_candidates, score
from scnet_dask.commands.score_train import prior_of, split_regions, train_delivered
from scnet_dask.config import ConvertConfig, DenoiseConfig, ScoreConfig
from scnet_dask.errors import InputError
from scnet_dask.io import open_source
from scnet_dask.io.omezarr import is_zarr
from scnet_dask.methods import get

__all__ = ["denoise_auto", "auto_candidates", "TABLE_KEYS"]

log = logging.getLogger(__name__)

#: The score columns recorded in the output's provenance.
TABLE_KEYS = ("rank", "candidate", "method", "mse_estimate", "psnr_estimate", "half_error_fit",
              "noisier_error_fit", "half_error", "fsc_0143_angstrom", "prior")  # fmt: skip


def auto_candidates(steps: int) -> list[dict[str, Any]]:
    """``score``'s default set, plus a short n2n and SC-Net of ``steps`` (none with 0)."""
    short = {"steps": steps, "patch_size": 32, "batch_size": 2, "features": 16}
    trained = [
        {"name": f"n2n {steps} steps", "method": "n2n", "train": dict(short)},
        {"name": f"scnet {steps} steps", "method": "scnet",
         "train": {**short, "prior": "best"}},
    ] if steps else []  # fmt: skip
    return [dict(c) for c in DEFAULT_CANDIDATES] + trained


def _model_dir(out: Path) -> Path:
    return out.with_name(out.name.split(".")[0] + "_auto_model")


def _as_zarr(path: Path, work: Path, name: str) -> Path:
    """``path`` itself if an OME-Zarr (training reads those), else its conversion in ``work``."""
    if is_zarr(path):
        return path
    z = work / f"{name}.zarr"
    if not z.exists():
        convert(ConvertConfig(input=path, output=z), show_progress=False)
    return z


def _deliver_model(
    spec: MethodSpec, row: dict[str, Any], specs: dict[str, MethodSpec], cfg: DenoiseConfig,
    work: Path,
) -> Path:  # fmt: skip
    """Train the winning ``train:`` recipe on the whole input; its checkpoint."""
    opts = cfg.options
    if spec.method == "n2n":
        inputs = {"even": _as_zarr(Path(opts.even), work, "even"),
                  "odd": _as_zarr(Path(opts.odd), work, "odd")}  # fmt: skip
    else:
        inputs = {"noisy": _as_zarr(Path(cfg.input), work, "input")}
        if row.get("prior"):
            inputs["prior"] = prior_of(specs[row["prior"]], Path(cfg.input),
                                       work / "prior_input.zarr", cfg.chunks, cfg.device)
    log.info("--method auto: training %s on the whole input (%s)", spec.name,
             ", ".join(f"{k}={v}" for k, v in inputs.items()))  # fmt: skip
    return train_delivered(spec, inputs, _model_dir(Path(cfg.output)), cfg.device)


def _check_targets(cfg: DenoiseConfig, out: Path, model_dir: Path) -> None:
    """Refuse an existing output or model folder before any work (unless told otherwise)."""
    if out.exists() and not (cfg.overwrite or cfg.resume):
        raise InputError(f"{out}: exists; give --overwrite to replace it")
    if model_dir.exists() and not cfg.resume:
        if not cfg.overwrite:
            raise InputError(f"{model_dir}: exists (a model --method auto delivered); give "
                             "--overwrite to replace it or --resume to reuse it")  # fmt: skip
        shutil.rmtree(model_dir)


def _default_candidates(even: Path, steps: int, work: Path) -> Path:
    """The default set as a YAML file in ``work``; no trained ones if regions cannot hold 32³."""
    shape = tuple(int(n) for n in open_source(even).data.shape)
    try:
        split_regions(shape, 32)
    except InputError as e:
        if steps:
            log.warning("%s: %s; --method auto scores the filters only", even, e)
        steps = 0
    work.mkdir(parents=True, exist_ok=True)
    path = work / "candidates.yaml"
    path.write_text(yaml.safe_dump(auto_candidates(steps), allow_unicode=True, sort_keys=False))
    return path


def denoise_auto(cfg: DenoiseConfig, show_progress: bool = True) -> dict[str, Any]:
    """Score the candidates on ``cfg``'s ``even``/``odd`` halves; denoise with the best.

    Returns
    -------
    dict
        :func:`scnet_dask.commands.denoise.denoise`'s summary, plus ``auto``: the pick and
        the score table.

    Raises
    ------
    InputError
        No halves given, halves unlike INPUT's grid, or no candidate that can be delivered.

    """
    opts = cfg.options
    if opts.even is None or opts.odd is None:
        raise InputError(
            f"{cfg.input}: --method auto needs --even and --odd (the halves of INPUT) to score "
            "the candidates on"
        )
    out = Path(cfg.output)
    work = out.with_name(f".{out.name}.score")
    model_dir = _model_dir(out)
    _check_targets(cfg, out, model_dir)
    candidates = opts.candidates or _default_candidates(Path(opts.even), opts.auto_steps, work)
    specs = {s.name: s for s in load_candidates(candidates)}
    rows = score(ScoreConfig(
        even=opts.even, odd=opts.odd, out=work, candidates=candidates,
        chunks=cfg.chunks, device=cfg.device,
    ))  # fmt: skip
    table = [{k: r.get(k) for k in TABLE_KEYS} for r in rows]
    deliverable = [r for r in rows if r["method"] != "none" and (
        not get(r["method"]).trains or specs[r["candidate"]].train is not None)]  # fmt: skip
    if not deliverable:
        raise InputError(
            f"{candidates}: no candidate --method auto can deliver (the identity and "
            "candidates with checkpoints are scored, not delivered)"
        )
    best = deliverable[0]
    if rows[0]["method"] == "none":
        log.warning(
            "%s: no candidate scored better than the input itself (estimated error %.5g vs %.5g "
            "for %s); denoising with %s anyway",
            cfg.input, rows[0]["mse_estimate"], best["mse_estimate"], best["candidate"],
            best["candidate"],
        )  # fmt: skip
    log.info("--method auto: %s scored best of %d candidates (estimated PSNR %.2f dB)",
             best["candidate"], len(rows), best["psnr_estimate"])  # fmt: skip
    spec = specs[best["candidate"]]
    ck = _deliver_model(spec, best, specs, cfg, work) if spec.train is not None else None
    chosen = DenoiseConfig.model_validate({
        **cfg.model_dump(exclude={"options", "method", "checkpoint"}), "method": spec.method,
        **({"checkpoint": ck} if ck is not None else {}),
        **spec.options(), **({"halo": spec.halo} if spec.halo != "auto" else {}),
        **({"chunks": spec.chunks} if spec.chunks else {}),
    })  # fmt: skip
    auto: dict[str, Any] = {"picked": best["candidate"], "method": spec.method,
                            "options": spec.options(), "score": table}  # fmt: skip
    if ck is not None:
        trained_on = ({"even": str(opts.even), "odd": str(opts.odd)} if spec.method == "n2n"
                      else {"noisy": str(cfg.input)})  # fmt: skip
        auto.update(train=spec.train, model=str(ck), trained_on=trained_on)
        log.info("--method auto: the model is kept in %s", model_dir)
    summary = denoise(chosen, show_progress, extra={"auto": auto})
    shutil.rmtree(work, ignore_errors=True)
    return {**summary, "auto": auto}
