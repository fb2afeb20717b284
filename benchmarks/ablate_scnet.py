"""SC-Net ablation: each factor alone against the paper's recipe, on one dataset and budget.

Every row is a ``benchmarks/quality.py`` row (same cache, same table), so results add up
across calls; ``--stage`` picks the list:

- ``single``: the paper's recipe (Gaussian prior σ 1, own-statistics prior normalisation,
  0.1 regions per voxel, ±1 shifts, rotations in all planes, λ 0.6/0.1/0.2/0.01, 10 % L_rec
  warm-up, up-sampling block, σ 0.5 post-filter), then one factor changed at a time;
- ``combo``: combinations of the factors that helped;
- ``budget``: the chosen recipe at several step counts (quality against training time);
- ``capacity``: 64³ patches, 32 features (slower steps).

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
BUDGET = {f"recipe, {n} steps": RECIPE + f",steps={n}" for n in (200, 800, 1600)}


def rows(stage: str) -> list[str]:
    table = {"single": SINGLE, "combo": COMBO, "budget": BUDGET, "capacity": CAPACITY}[stage]
    out = []
    for label, extra in table.items():
        opts = ",".join(filter(None, [BASE.partition(":")[2], extra]))
        if "prior=topaz-3d" in extra:
            opts = opts.replace("prior=gaussian,", "")
        out.append(f"scnet:{opts},label={label}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("quality"))
    ap.add_argument("--dataset", default="rec15")
    ap.add_argument("--stage", choices=["single", "combo", "budget", "capacity"], default="single")
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
