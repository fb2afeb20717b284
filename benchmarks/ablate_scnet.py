"""SC-Net ablation: each factor alone against the paper's recipe, on one dataset and budget.

Every row is a ``benchmarks/quality.py`` row (same cache, same table), so results add up
across calls; ``--stage`` picks the list:

- ``single``: the paper's recipe (Gaussian prior σ 1, own-statistics prior normalisation,
  0.1 regions per voxel, ±1 shifts, rotations in all planes, λ 0.6/0.1/0.2/0.01, 10 % L_rec
  warm-up, up-sampling block, σ 0.5 post-filter), then one factor changed at a time;
- ``combo``: combinations of the factors that helped (the default recipe);
- ``capacity``: 64³ patches, 32 features (slower steps);
- ``recipe``: one factor changed at a time on the default recipe (scnet-dask's defaults): λ_reg,
  learning rate and its schedule, patch size, the tilt-series prior, and a steps curve with the
  last and the validation-best checkpoint;
- ``seeds``: the default recipe (400 and 800 steps) with other seeds: the run-to-run spread;
- ``transfer``: the factors that mattered, on another dataset (``--dataset temsim``).

    python benchmarks/ablate_scnet.py --work quality --dataset rec15 --stage single
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

#: the paper's recipe (and the public code's) with a Gaussian σ 1 prior
PAPER = "prior=gaussian,prior_normalisation=own,lambda_smooth=0.1"
#: the factors that helped alone (docs/scnet_ablation.md): now scnet-dask's defaults, spelt out
#: so that the rows keep meaning them if the defaults change
RECIPE = "prior=gaussian,prior_normalisation=affine,lambda_smooth=0.01"
SINGLE = {
    "paper recipe": "",
    "prior normalised by the noisy volume's statistics": "prior_normalisation=noisy",
    "prior affine-fitted to the noisy volume": "prior_normalisation=affine",
    "10 % of voxels replaced (not 0.1 regions per voxel)": "swap_ratio_unit=voxels",
    "truly blind spot": "blind_spot_strict=true",
    "rotations in the yx plane only": "augment_planes=yx",
    "λ_smooth 0.01": "lambda_smooth=0.01",
    "λ_smooth 0": "lambda_smooth=0",
    "no σ 0.5 post-filter": "post_sigma=0",
    "no up-sampling block": "upsample=false",
    "Topaz-3D prior": "prior=topaz-3d",
    "no L_rec warm-up (paper schedule)": "rec_warmup=0",
    "λ_reg 0": "lambda_reg=0",
    "lr 1e-3": "lr=1e-3",
}
CAPACITY = {"64³ patches": "patch=64", "32 features": "features=32"}
COMBO = {
    "affine prior + λ_smooth 0.01": "",
    "… + no post-filter": "post_sigma=0",
    "… + Topaz-3D prior": "prior=topaz-3d",
    "… + λ_smooth 0.03": "lambda_smooth=0.03",
}
ON_RECIPE = {
    "default recipe": "",
    "default recipe · validation-best checkpoint": "ckpt=best",
    "… λ_reg 0": "lambda_reg=0",
    "… λ_reg 0.1": "lambda_reg=0.1",
    "… lr 2e-4": "lr=2e-4",
    "… lr 1e-3": "lr=1e-3",
    "… 48³ patches": "patch=48",
    "… tilt-series prior": "prior=tilt-series",
    "… 200 steps": "steps=200",
    "… 800 steps": "steps=800",
    "… 800 steps · validation-best checkpoint": "steps=800,ckpt=best",
    "… 800 steps · λ_smooth 0.03": "steps=800,lambda_smooth=0.03",
    "… 1600 steps": "steps=1600",
    "… 1600 steps · validation-best checkpoint": "steps=1600,ckpt=best",
    "… cosine lr schedule": "lr_schedule=cosine",
    "… 800 steps · cosine lr schedule": "steps=800,lr_schedule=cosine",
    "… 1600 steps · cosine lr schedule": "steps=1600,lr_schedule=cosine",
    "… truly blind spot · 10 % of voxels replaced": "blind_spot_strict=true,swap_ratio_unit=voxels",
    "… truly blind spot · 10 % of voxels · 1600 steps":
        "blind_spot_strict=true,swap_ratio_unit=voxels,steps=1600",
}
#: run-to-run spread: the default recipe and its 800-step run with other seeds (patches, blind
#: spots, initial weights), the yardstick of every difference above
SEEDS = {
    **{f"default recipe · seed {k}": f"seed={k}" for k in (1, 2)},
    **{f"… 800 steps · seed {k}": f"steps=800,seed={k}" for k in (1, 2)},
}
#: the factors that mattered on rec15, on another dataset
TRANSFER = {
    "paper recipe": "prior_normalisation=own,lambda_smooth=0.1",
    "default recipe": "",
    "… λ_smooth 0": "lambda_smooth=0",
    "… λ_smooth 0.03": "lambda_smooth=0.03",
    "… Topaz-3D prior": "prior=topaz-3d",
}
#: stage -> (the options every row starts from, {label: options changed})
STAGES = {"single": (PAPER, SINGLE), "capacity": (PAPER, CAPACITY), "combo": (RECIPE, COMBO),
          "recipe": (RECIPE, ON_RECIPE), "seeds": (RECIPE, SEEDS),
          "transfer": (RECIPE, TRANSFER)}  # fmt: skip


def _options(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in filter(None, text.split(",")))


def rows(stage: str) -> list[str]:
    """The ``quality.py`` rows of ``stage``: its base options with each row's changes."""
    base, table = STAGES[stage]
    out = []
    for label, extra in table.items():
        opts = {**_options(base), **_options(extra)}
        out.append("scnet:" + ",".join(f"{k}={v}" for k, v in opts.items()) + f",label={label}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("quality"))
    ap.add_argument("--dataset", default="rec15")
    ap.add_argument("--stage", choices=sorted(STAGES), default="single")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    base_rows = ["noisy", "gaussian", "prior:gaussian", "prior:topaz-3d"]
    cmd = [sys.executable, str(Path(__file__).with_name("quality.py")), "--work", str(a.work),
           "--datasets", a.dataset, "--steps", str(a.steps), "--device", a.device,
           "--rows", ";".join(base_rows + rows(a.stage))]  # fmt: skip
    raise SystemExit(subprocess.call(cmd))


if __name__ == "__main__":
    main()
