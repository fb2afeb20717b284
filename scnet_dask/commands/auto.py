"""``denoise --method auto``: score the candidates on the input's halves, denoise with the best.

The candidates (``score``'s default set, or ``--candidates``) are scored in a work folder
beside the output (``.NAME.score/``, resumable per candidate, removed once the output is
complete); the winner — the lowest half-split error among the candidates ``denoise`` can run
on INPUT without a checkpoint of its own — denoises INPUT, and the whole score table goes into
the output's provenance and the log. The pick is never worse, by the score, than any baseline
it scored. Trained candidates are scored with half-trained models but not delivered by
``auto`` (the delivered model must be trained on the whole data: train it, then denoise with
it); the identity is never delivered, and a warning says when it scored best.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from scnet_dask.commands.denoise import denoise
from scnet_dask.commands.score import load_candidates, score
from scnet_dask.config import DenoiseConfig, ScoreConfig
from scnet_dask.errors import InputError
from scnet_dask.methods import get

__all__ = ["denoise_auto", "TABLE_KEYS"]

log = logging.getLogger(__name__)

#: The score columns recorded in the output's provenance.
TABLE_KEYS = ("rank", "candidate", "method", "half_error", "psnr_estimate", "fsc_0143_angstrom")


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
    specs = {s.name: s for s in load_candidates(opts.candidates)}
    out = Path(cfg.output)
    work = out.with_name(f".{out.name}.score")
    rows = score(ScoreConfig(
        even=opts.even, odd=opts.odd, out=work, candidates=opts.candidates,
        chunks=cfg.chunks, device=cfg.device,
    ))  # fmt: skip
    table = [{k: r.get(k) for k in TABLE_KEYS} for r in rows]
    deliverable = [r for r in rows if r["method"] != "none" and not get(r["method"]).trains]
    if not deliverable:
        raise InputError(
            f"{opts.candidates}: no candidate --method auto can deliver (the identity and "
            "trained methods are scored, not delivered)"
        )
    best = deliverable[0]
    if rows[0]["method"] == "none":
        log.warning(
            "%s: no candidate scored better than the input itself (half error %.5g vs %.5g "
            "for %s); denoising with %s anyway",
            cfg.input, rows[0]["half_error"], best["half_error"], best["candidate"],
            best["candidate"],
        )  # fmt: skip
    log.info("--method auto: %s scored best of %d candidates (half error %.5g)",
             best["candidate"], len(rows), best["half_error"])  # fmt: skip
    spec = specs[best["candidate"]]
    chosen = DenoiseConfig.model_validate({
        **cfg.model_dump(exclude={"options", "method"}), "method": spec.method,
        **spec.options(), **({"halo": spec.halo} if spec.halo != "auto" else {}),
        **({"chunks": spec.chunks} if spec.chunks else {}),
    })  # fmt: skip
    auto = {"picked": best["candidate"], "method": spec.method, "options": spec.options(),
            "score": table}  # fmt: skip
    summary = denoise(chosen, show_progress, extra={"auto": auto})
    shutil.rmtree(work, ignore_errors=True)
    return {**summary, "auto": auto}
