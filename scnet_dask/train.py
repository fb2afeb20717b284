"""``train``: SC-Net on one noisy volume and its prior, patches sampled lazily from OME-Zarr."""

from __future__ import annotations

import csv
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from tqdm import tqdm

from scnet_dask import __version__
from scnet_dask._device import resolve_device
from scnet_dask.config import TrainConfig
from scnet_dask.errors import InputError
from scnet_dask.io import open_source
from scnet_dask.io.omezarr import get_array
from scnet_dask.model.blindspot import blind_spot_replace
from scnet_dask.model.checkpoint import load_checkpoint, save_checkpoint
from scnet_dask.model.losses import LossWeights, n2v_losses, scnet_losses
from scnet_dask.model.unet import SCNetUNet
from scnet_dask.sampling import PatchSampler, foreground_mask, split_regions
from scnet_dask.stats import compute_statistics

__all__ = ["train", "TrainingDiverged", "build_model"]

log = logging.getLogger(__name__)
_TERMS = ("total", "rec", "smooth", "exp", "reg")
_LOG_FIELDS = ["epoch", "step", *_TERMS, "ramp", "lr", "step_seconds", "wait_seconds"]


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def build_model(config: dict[str, Any]) -> SCNetUNet:
    """The network described by a (train) config dict."""
    return SCNetUNet(features=int(config["features"]), upsample=bool(config["upsample"]))


def _open_level0(path: Path) -> tuple[zarr.Array, dict[str, Any]]:
    vol = open_source(path)
    if vol.format != "zarr":
        raise InputError(f"{path}: training reads OME-Zarr; run 'scnet-dask convert' first")
    group = zarr.open_group(str(path), mode="r")
    ome: Any = dict(group.attrs).get("ome", {})
    ms = ome.get("multiscales", [])
    name = ms[0]["datasets"][0]["path"] if ms else "0"
    stats = dict(vol.attrs.get("statistics") or {})
    if not stats:
        log.info("%s: no stored statistics; computing them", path)
        stats = compute_statistics(vol.data)
    if not np.isfinite(stats.get("std", np.nan)) or stats.get("n_nonfinite", 0):
        raise InputError(f"{path}: volume has NaN/Inf voxels or no finite statistics")
    return get_array(group, name), {**stats, "voxel_size_angstrom": list(vol.voxel_size_angstrom)}


def _mask_from_pyramid(path: Path, level0_shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
    group = zarr.open_group(str(path), mode="r")
    names = sorted((k for k in group.array_keys() if k.isdigit()), key=int)
    arr = get_array(group, names[-1])
    factor = max(1, int(round(level0_shape[-1] / arr.shape[-1])))
    return foreground_mask(np.asarray(arr[...])), factor


class _Run:
    """State of one training run (kept small so that checkpoints capture all of it)."""

    def __init__(self, cfg: TrainConfig, rank: int = 0):
        self.cfg = cfg
        self.rank = rank
        self.out = Path(cfg.out)
        self.device = resolve_device(cfg.device)
        self.noisy, self.stats_noisy = _open_level0(cfg.noisy)
        if cfg.prior is None:  # Noise2Void: no prior; the sampler's second patch goes unused
            self.prior, self.stats_prior = self.noisy, self.stats_noisy
        else:
            self.prior, self.stats_prior = _open_level0(cfg.prior)
        if self.noisy.shape != self.prior.shape:
            raise InputError(
                f"{cfg.prior}: prior grid {tuple(self.prior.shape)} differs from the noisy grid "
                f"{tuple(self.noisy.shape)} of {cfg.noisy}"
            )
        z, y, x = (int(s) for s in self.noisy.shape)
        shape = (z, y, x)
        self.train_region, self.val_region = split_regions(
            shape,
            cfg.patch_size,
            cfg.val_fraction if cfg.val_patches else 0.0,  # type: ignore[arg-type]
        )
        mask, factor = (None, 1)
        if cfg.foreground_mask:
            mask, factor = _mask_from_pyramid(cfg.noisy, shape)
        self.sampler = PatchSampler(
            self.noisy,
            self.prior,
            self.stats_noisy,
            self.stats_prior,
            cfg.patch_size,
            self.train_region,
            seed=cfg.seed + 7919 * rank,  # each rank draws its own patches
            mask=mask,
            mask_factor=factor,
            augment=cfg.augment,
        )
        tiles = math.prod(s // cfg.patch_size for s in shape)
        self.steps = cfg.steps_per_epoch or max(1, int(0.9 * tiles) // cfg.batch_size)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model_dump(mode="json")).to(self.device)
        self.opt = torch.optim.Adam(
            self.model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2)
        )
        self.gen = torch.Generator().manual_seed(cfg.seed + 1 + 7919 * rank)
        self.net: torch.nn.Module = self.model  # what training forwards through (DDP or not)
        self.weights = LossWeights(
            rec=cfg.lambda_rec, smooth=cfg.lambda_smooth, exp=cfg.lambda_exp, reg=cfg.lambda_reg
        )
        self.epoch = 0
        self.step = 0
        self.best_val = math.inf
        self.val_set = []
        if self.val_region is not None:
            vs = PatchSampler(
                self.noisy,
                self.prior,
                self.stats_noisy,
                self.stats_prior,
                cfg.patch_size,
                self.val_region,
                seed=cfg.seed + 2,
                augment=False,
                prefetch=1,
                workers=1,
            )
            self.val_set = [
                vs.read(o, a) for o, a in vs.fixed_patches(cfg.val_patches, cfg.seed + 2)
            ]
            vs.close()

    # --- checkpoints ---------------------------------------------------------------------
    def payload(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "config": self.cfg.model_dump(mode="json"),
            "normalisation": {"noisy": _plain(self.stats_noisy), "prior": _plain(self.stats_prior)},
            "epoch": self.epoch,
            "step": self.step,
            "best_val": self.best_val,
            "rng": {
                "torch": torch.get_rng_state(),
                "blind_spot": self.gen.get_state(),
                "sampler": _plain(self.sampler.get_state()),
            },
            "provenance": {
                "noisy": str(Path(self.cfg.noisy).resolve()),
                "prior": str(Path(self.cfg.prior).resolve()) if self.cfg.prior else None,
                "scnet_dask_version": __version__,
            },
        }

    def restore(self, data: dict[str, Any]) -> None:
        old = data.get("config", {})
        for key in ("method", "features", "upsample", "patch_size"):
            if old.get(key, "scnet" if key == "method" else None) != getattr(self.cfg, key):
                raise InputError(
                    f"{self.out / 'last.pt'}: checkpoint was trained with {key}={old.get(key)!r}, "
                    f"this run asks for {getattr(self.cfg, key)!r}"
                )
        try:
            self.model.load_state_dict(data["model"])
            self.opt.load_state_dict(data["optimizer"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise InputError(f"{self.out / 'last.pt'}: incompatible checkpoint ({e})") from e
        self.epoch, self.step, self.best_val = (
            int(data["epoch"]),
            int(data["step"]),
            float(data["best_val"]),
        )
        torch.set_rng_state(data["rng"]["torch"])
        if self.rank == 0:  # other ranks keep their own streams (see train_distributed)
            self.gen.set_state(data["rng"]["blind_spot"])
            self.sampler.set_state(data["rng"]["sampler"])

    # --- one step ------------------------------------------------------------------------
    def ramp(self) -> float:
        """Weight (0..1) of L_smooth, L_exp and L_reg at the current step (``rec_warmup``).

        The three prior-driven terms are blind to the output's sign (gradient magnitudes, a
        mean, an L1 norm) and dominate L_rec by an order of magnitude at the paper's λ; from
        a random start they can lock the network into a contrast-inverted solution that L_rec
        cannot pull it out of (to flip, the output would pass through zero gradients, which
        L_smooth penalises most). Training on L_rec alone first fixes the sign.
        """
        k = round(self.cfg.rec_warmup * self.cfg.epochs * self.steps)
        if k <= 0:
            return 1.0
        return float(min(1.0, max(0.0, (self.step - k) / k)))

    def losses(
        self, noisy: np.ndarray, prior: np.ndarray, gen: torch.Generator, ramp: float = 1.0
    ) -> dict[str, torch.Tensor]:
        n = torch.from_numpy(noisy)
        p = torch.from_numpy(prior)
        cfg = self.cfg
        src, mask = blind_spot_replace(
            n,
            p,
            region=cfg.swap_size,
            window=cfg.swap_window,
            ratio=cfg.swap_ratio,
            mode=cfg.blind_spot_mode,
            generator=gen,
        )
        dev = self.device
        n, p, src, mask = (t.to(dev, non_blocking=True) for t in (n, p, src, mask))
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            out = (self.net if self.model.training else self.model)(src)
        if cfg.method == "n2v":
            return n2v_losses(out.float(), n, mask)
        w = self.weights
        if ramp < 1.0:
            w = LossWeights(rec=w.rec, smooth=ramp * w.smooth, exp=ramp * w.exp, reg=ramp * w.reg)
        return scnet_losses(out.float(), n, p, mask, w, cfg.rec_variant)

    def validate(self) -> float:
        if not self.val_set:
            return math.nan
        self.model.eval()
        gen = torch.Generator().manual_seed(self.cfg.seed + 3)
        vals = []
        with torch.no_grad():
            for a, b in self.val_set:
                vals.append(float(self.losses(a[None, None], b[None, None], gen)["total"]))
        self.model.train()
        return float(np.mean(vals))


def _plain(obj: Any) -> Any:
    """Convert numpy scalars and tuples into plain Python for ``weights_only`` loading."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _prepare_run_dir(cfg: TrainConfig) -> None:
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: run directory path exists and is not a folder")
    if cfg.resume:
        if not (out / "last.pt").exists():
            raise InputError(f"{out}: nothing to resume (no last.pt)")
        return
    if (out / "last.pt").exists() and not cfg.overwrite:
        raise InputError(f"{out}: holds a training run; pass --resume to continue or --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("last.pt", "best.pt", "log.csv", "curves.png"):
        (out / name).unlink(missing_ok=True)


def _truncate_log(path: Path, step: int) -> None:
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_LOG_FIELDS)
        w.writeheader()
        w.writerows(rows)


def train(
    cfg: TrainConfig, show_progress: bool = True, rank: int = 0, world: int = 1
) -> dict[str, Any]:
    """Train SC-Net (or Noise2Void: ``cfg.method``); write checkpoints, log and plots.

    ``last.pt``, ``best.pt``, ``log.csv`` and plots go into ``cfg.out``.

    Parameters
    ----------
    rank, world
        Data-parallel rank and number of ranks; with ``world > 1`` the default
        ``torch.distributed`` process group must already be initialised (see
        :func:`scnet_dask.ddp.train_distributed`). Rank 0 writes the run folder.

    Returns
    -------
    dict
        Epochs run, steps, final and best validation loss, mean step time (s), the fraction of
        the time the trainer waited for data, and a SHA-256 of the final weights.

    """
    lead = rank == 0
    if world == 1:
        _prepare_run_dir(cfg)  # train_distributed does it once, before starting the ranks
    run = _Run(cfg, rank)
    out = Path(cfg.out)
    if cfg.resume:
        run.restore(load_checkpoint(out / "last.pt"))
        if lead:
            _truncate_log(out / "log.csv", run.step)
        log.info("resuming at epoch %d, step %d", run.epoch + 1, run.step)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [run.device.index] if run.device.type == "cuda" else None
        run.net = DistributedDataParallel(run.model, device_ids=ids)
    log_path = out / ("log.csv" if lead else f".log.rank{rank}.csv")
    new_log = not log_path.exists()
    step_times: list[float] = []
    wall0 = time.perf_counter()
    wait0 = run.sampler.wait_seconds
    with open(log_path, "a", newline="") as logf:
        writer = csv.DictWriter(logf, fieldnames=_LOG_FIELDS)
        if new_log:
            writer.writeheader()
        try:
            for epoch in range(run.epoch + 1, cfg.epochs + 1):
                bar = tqdm(
                    range(run.steps),
                    desc=f"epoch {epoch}/{cfg.epochs}",
                    file=sys.stderr,
                    disable=not show_progress,
                )
                for _ in bar:
                    t0 = time.perf_counter()
                    w0 = run.sampler.wait_seconds
                    noisy, prior = run.sampler.next_batch(cfg.batch_size)
                    ramp = run.ramp()
                    terms = run.losses(noisy, prior, run.gen, ramp)
                    finite = torch.isfinite(terms["total"].detach()).float()
                    if world > 1:  # every rank stops together
                        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
                    if not bool(finite):
                        raise TrainingDiverged(
                            f"{out}: loss became {float(terms['total'].detach())} "
                            f"at step {run.step + 1} "
                            f"(epoch {epoch}); stopped, last good checkpoint "
                            f"{out / 'last.pt'} (epoch {run.epoch}) kept"
                        )
                    run.opt.zero_grad(set_to_none=True)
                    terms["total"].backward()
                    run.opt.step()
                    run.step += 1
                    dt = time.perf_counter() - t0
                    step_times.append(dt)
                    row = {k: f"{float(terms[k].detach()):.6g}" for k in _TERMS}
                    writer.writerow(
                        {
                            "epoch": epoch,
                            "step": run.step,
                            **row,
                            "ramp": f"{ramp:.4g}",
                            "lr": cfg.lr,
                            "step_seconds": f"{dt:.4f}",
                            "wait_seconds": f"{run.sampler.wait_seconds - w0:.4f}",
                        }
                    )
                    bar.set_postfix(loss=row["total"], rec=row["rec"])
                logf.flush()
                run.sampler.reset_queue()
                run.epoch = epoch
                if not lead:
                    continue
                val = run.validate()
                improved = not math.isnan(val) and val < run.best_val
                if improved:
                    run.best_val = val
                save_checkpoint(out / "last.pt", run.payload())
                if improved or not (out / "best.pt").exists():
                    save_checkpoint(out / "best.pt", run.payload())
                log.info("epoch %d: validation loss %.5g", epoch, val)
                if cfg.plots:
                    from scnet_dask.plots import training_curves, validation_slices

                    training_curves(log_path, out / "curves.png")
                    if run.val_set:
                        validation_slices(run, out / f"epoch_{epoch:03d}.png")
        finally:
            run.sampler.close()
    if not lead:
        log_path.unlink(missing_ok=True)
    wall = time.perf_counter() - wall0
    waited = run.sampler.wait_seconds - wait0
    return {
        "run_dir": str(out),
        "epochs": run.epoch,
        "steps": run.step,
        "best_val": run.best_val,
        "mean_step_seconds": float(np.mean(step_times)) if step_times else math.nan,
        "wait_fraction": waited / wall if wall > 0 else 0.0,
        "device": str(run.device),
        "rank": rank,
        "world": world,
        "weights_sha256": _weights_hash(run.model),
    }


def _weights_hash(model: torch.nn.Module) -> str:
    """SHA-256 over the model's trainable weights (to compare data-parallel replicas).

    BatchNorm running statistics are left out: under DDP every rank updates them from its own
    batch, and rank 0's are broadcast at the start of each forward.
    """
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(model.named_parameters()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
