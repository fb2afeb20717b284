"""SC-Net ablation: each factor alone against the paper's recipe, on one dataset and budget.

Every row is a ``benchmarks/quality.py`` row (same cache, same table), so results add up
across calls; ``--stage`` picks the list:

- ``single``: the paper's recipe (Gaussian prior σ 1, own-statistics prior normalisation,
  0.1 regions per voxel, ±1 shifts, rotations in all planes, λ 0.6/0.1/0.2/0.01, 10 % L_rec
  warm-up, up-sampling block, σ 0.5 post-filter), then one factor changed at a time;
- ``combo``: combinations of the factors that helped;
- ``capacity``: 64³ patches, 32 features (slower steps);
- ``recipe``: one factor changed at a time on the default recipe (scnet-dask's defaults): λ_reg,
  learning rate and its schedule, patch size, the tilt-series prior, and a steps curve with the
  last and the validation-best checkpoint.

    python benchmarks/ablate_scnet.py --work quality --dataset rec15 --stage single
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BASE = "scnet:prior=gaussian"
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
#: the factors that helped alone (docs/scnet_ablation.md): now scnet-dask's defaults
RECIPE = "prior_normalisation=affine,lambda_smooth=0.01"
COMBO = {
    "affine prior + λ_smooth 0.01": RECIPE,
    "… + no post-filter": RECIPE + ",post_sigma=0",
    "… + Topaz-3D prior": RECIPE + ",prior=topaz-3d",
    "… + λ_smooth 0.03": RECIPE.replace("0.01", "0.03"),
}
#: factors on the default recipe, spelt out (so that the rows keep meaning it if defaults change)
RECIPE_ROWS = {
    "default recipe": RECIPE,
    "default recipe · validation-best checkpoint": RECIPE + ",ckpt=best",
    "… λ_reg 0": RECIPE + ",lambda_reg=0",
    "… λ_reg 0.1": RECIPE + ",lambda_reg=0.1",
    "… lr 2e-4": RECIPE + ",lr=2e-4",
    "… lr 1e-3": RECIPE + ",lr=1e-3",
    "… 48³ patches": RECIPE + ",patch=48",
    "… tilt-series prior": RECIPE + ",prior=tilt-series",
    "… 200 steps": RECIPE + ",steps=200",
    "… 800 steps": RECIPE + ",steps=800",
    "… 800 steps · validation-best checkpoint": RECIPE + ",steps=800,ckpt=best",
    "… 800 steps · λ_smooth 0.03": RECIPE.replace("0.01", "0.03") + ",steps=800",
    "… 1600 steps": RECIPE + ",steps=1600",
    "… 1600 steps · validation-best checkpoint": RECIPE + ",steps=1600,ckpt=best",
    "… cosine lr schedule": RECIPE + ",lr_schedule=cosine",
    "… 800 steps · cosine lr schedule": RECIPE + ",steps=800,lr_schedule=cosine",
    "… 1600 steps · cosine lr schedule": RECIPE + ",steps=1600,lr_schedule=cosine",
}


def rows(stage: str) -> list[str]:
    table = {"single": SINGLE, "combo": COMBO, "capacity": CAPACITY,
             "recipe": RECIPE_ROWS}[stage]  # fmt: skip
    out = []
    for label, extra in table.items():
        opts = ",".join(filter(None, [BASE.partition(":")[2], extra]))
        if "prior=" in extra:
            opts = opts.replace("prior=gaussian,", "")
        out.append(f"scnet:{opts},label={label}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("quality"))
    ap.add_argument("--dataset", default="rec15")
    ap.add_argument("--stage", choices=["single", "combo", "capacity", "recipe"], default="single")
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
