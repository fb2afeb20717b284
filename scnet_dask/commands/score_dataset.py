"""``score --dataset``: the half-split score on every tomogram of a dataset that has halves.

Each tomogram is scored as by ``score EVEN ODD`` (:func:`scnet_dask.commands.score.score`) into
``DIR/NAME/`` (resumable per candidate), and ``DIR/score.md`` / ``DIR/score.csv`` summarise the
candidates over the tomograms: how often each ranked first, its mean rank and its mean PSNR
estimate. Tomograms without halves are listed and skipped. Candidates with checkpoints are
refused: a model trained on one half of one tomogram has not seen the other tomograms' halves,
but the leakage rule of ``score`` (models trained on the scoring half alone) cannot hold for
them all. ``train:`` candidates are trained per tomogram by region split, as by ``score``.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

from scnet_dask.commands.score import load_candidates, score
from scnet_dask.config import ScoreConfig
from scnet_dask.errors import InputError
from scnet_dask.io.dataset import Tomogram, find_dataset, select
from scnet_dask.methods import get

__all__ = ["score_dataset", "SUMMARY_COLUMNS", "spaced"]

log = logging.getLogger(__name__)

#: Columns of ``DIR/score.csv`` in dataset mode.
SUMMARY_COLUMNS = ["rank", "candidate", "wins", "tomograms", "mean_rank", "mean_psnr_estimate",
                   "mean_mse_estimate"]  # fmt: skip


def spaced(items: list[Tomogram], k: int | None) -> list[Tomogram]:
    """At most ``k`` of ``items``, evenly spaced through them (all when ``k`` is ``None``)."""
    n = len(items)
    if k is None or k >= n:
        return list(items)
    return [items[(2 * j + 1) * n // (2 * k)] for j in range(k)]


def score_dataset(cfg: ScoreConfig) -> tuple[list[dict[str, Any]], dict[str, list[dict]]]:
    """Score the candidates on every chosen tomogram with halves; summary rows best first.

    Returns
    -------
    tuple
        The summary rows (one per candidate, by mean rank) and each tomogram's score rows.

    Raises
    ------
    InputError
        No tomogram with halves, a trained candidate, a bad candidate file or dataset.

    """
    if cfg.dataset is None:
        raise ValueError(f"score_dataset needs --dataset, got {cfg}")
    for spec in load_candidates(cfg.candidates):
        if spec.method != "none" and get(spec.method).trains and spec.train is None:
            raise InputError(
                f"{cfg.candidates}: candidate {spec.name!r} is a trained model; with --dataset "
                "only untrained candidates are scored (a model trained on one half of one "
                "tomogram cannot be scored fairly on the others): score it with EVEN ODD, or "
                "give 'train:' to train it on each tomogram by region split"
            )
    ds = select(find_dataset(cfg.dataset), cfg.tomograms, cfg.exclude)
    halves = [t for t in ds.tomograms if t.has_halves]
    lacking = [t.name for t in ds.tomograms if not t.has_halves]
    if not halves:
        raise InputError(f"{cfg.dataset}: no tomogram has even/odd halves to score")
    if lacking:
        more = ", ..." if len(lacking) > 5 else ""
        log.warning(
            "%s: %d tomogram(s) without halves not scored: %s",
            cfg.dataset, len(lacking), ", ".join(lacking[:5]) + more,
        )  # fmt: skip
    chosen = spaced(halves, cfg.count)
    per: dict[str, list[dict[str, Any]]] = {}
    for i, t in enumerate(chosen, 1):
        log.info("score %d/%d: %s", i, len(chosen), t.name)
        sub = cfg.model_copy(update={
            "even": t.even, "odd": t.odd, "out": Path(cfg.out) / t.name, "dataset": None,
            "tomograms": None, "exclude": None, "count": None,
        })  # fmt: skip
        per[t.name] = score(ScoreConfig.model_validate(sub.model_dump()))
    rows = _summary(per)
    _write(rows, per, Path(cfg.out), cfg, lacking)
    return rows, per


def _summary(per: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    by: dict[str, list[dict[str, Any]]] = {}
    for rows in per.values():
        for r in rows:
            by.setdefault(r["candidate"], []).append(r)

    def mean(vals: list[float]) -> float:
        finite = [v for v in vals if v is not None and math.isfinite(v)]
        return sum(finite) / len(finite) if finite else math.nan

    out: list[dict[str, Any]] = [
        {
            "candidate": name,
            "wins": sum(1 for r in rs if r["rank"] == 1),
            "tomograms": len(rs),
            "mean_rank": mean([float(r["rank"]) for r in rs]),
            "mean_psnr_estimate": mean([r["psnr_estimate"] for r in rs]),
            "mean_mse_estimate": mean([r["mse_estimate"] for r in rs]),
        }
        for name, rs in by.items()
    ]
    out.sort(key=lambda r: (r["mean_rank"], -r["wins"]))
    for i, r in enumerate(out, 1):
        r["rank"] = i
    return out


def _write(
    rows: list[dict[str, Any]], per: dict[str, list[dict[str, Any]]], out: Path,
    cfg: ScoreConfig, lacking: list[str],
) -> None:  # fmt: skip
    with open(out / "score.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    lines = [
        f"Dataset {cfg.dataset}: {len(per)} tomogram(s) scored"
        + (f", {len(lacking)} without halves skipped" if lacking else "") + ".",
        "",
        "| rank | candidate | first on | mean rank | mean PSNR estimate (dB) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        psnr = r["mean_psnr_estimate"]
        lines.append(
            f"| {r['rank']} | {r['candidate']} | {r['wins']} of {r['tomograms']} | "
            f"{r['mean_rank']:.2f} | {'–' if psnr != psnr else f'{psnr:.2f}'} |"
        )
    lines += ["", "Winner per tomogram (each tomogram's table in its folder):", ""]
    lines += [f"- {name}: {rs[0]['candidate']}" for name, rs in per.items()]
    (out / "score.md").write_text("\n".join(lines) + "\n")
