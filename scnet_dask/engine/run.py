"""The state of one training run: inputs, samplers, networks, optimisers, validation set, RNGs.

Everything a checkpoint must hold to continue a run exactly (``--resume``) lives here; the loop
that drives it is :func:`scnet_dask.engine.train.train`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scnet_dask import __version__
from scnet_dask.config import TrainConfig
from scnet_dask.engine.dataset_run import DatasetInputs, dataset_inputs
from scnet_dask.engine.inputs import (
    _mask_from_pyramid,
    _open_inputs,
    augment_planes,
    statistics_hook,
)
from scnet_dask.engine.sampling import PatchSampler, PrefetchingSampler, Region, split_regions
from scnet_dask.errors import InputError
from scnet_dask.io.store import source_signature
from scnet_dask.methods import Method, TrainState, get
from scnet_dask.methods.base import lr_factor
from scnet_dask.methods.loading import with_axes
from scnet_dask.model.device import resolve_device

__all__ = [
    "TrainingDiverged",
]


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class _Run:
    """State of one training run (kept small so that checkpoints capture all of it)."""

    def __init__(
        self,
        cfg: TrainConfig,
        rank: int = 0,
        world: int = 1,
        stats: dict[str, dict[str, Any]] | None = None,
    ):
        self.cfg = cfg
        self.rank = rank
        self.world = world
        self.out = Path(cfg.out)
        self.method: Method = get(cfg.method)
        self.device = resolve_device(cfg.device)
        patch = self.method.patch_shape(cfg.options, cfg.patch_size)
        self.patch = patch
        self.val_tomograms: dict[str, list[dict[str, np.ndarray]]] = {}
        self.dataset: DatasetInputs | None = None
        self.paths: dict[str, Path] = {}
        self.input_signatures: dict[str, Any] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self.sampler: PrefetchingSampler
        self.planes: str = "all"
        self.train_region: Region | None = None
        self.val_region: Region | None = None
        arrays: dict[str, Any] = {}
        if cfg.dataset is None:
            arrays, tiles = self._open_volume(rank, stats)
        else:
            self.dataset = d = dataset_inputs(cfg, self.method, patch, rank)
            self.paths, self.input_signatures, self.stats = {}, d.signatures, d.normalisation
            self.planes, self.sampler, tiles = d.planes, d.sampler, d.tiles
            self.val_tomograms = d.val_tomograms
        self.steps = cfg.steps_per_epoch or max(1, int(0.9 * tiles) // cfg.batch_size)
        torch.manual_seed(cfg.seed)
        nets = {k: v.to(self.device) for k, v in self.method.build(cfg.options).items()}
        opts = self.method.optimizers(nets, cfg.options, cfg)
        self.state = TrainState(
            networks=nets,
            optimizers=opts,
            forward=dict(nets),
            options=cfg.options,
            device=self.device,
            total_steps=cfg.epochs * self.steps,
            update=self.update,
            run_dir=self.out,
            lead=rank == 0,
        )
        # --lr-schedule: each driven optimiser's span and its groups' learning rates at build
        self.lr_schedule = (
            self.method.lr_schedule if cfg.lr_schedule == "auto" else cfg.lr_schedule
        )
        self.lr_spans = (
            self.method.lr_schedule_span(cfg.options, opts, self.state.total_steps)
            if self.lr_schedule != "constant"
            else {}
        )
        self.base_lrs = {k: [g["lr"] for g in opts[k].param_groups] for k in self.lr_spans}
        self.gen = torch.Generator().manual_seed(cfg.seed + 1 + 7919 * rank)
        self.epoch = 0
        self.best_val = math.inf
        self.val_set = (
            self._validation_set(arrays) if self.dataset is None else self.dataset.val_set
        )

    def _open_volume(
        self, rank: int, stats: dict[str, dict[str, Any]] | None
    ) -> tuple[dict[str, Any], int]:
        """One volume's inputs: arrays, statistics, regions and sampler; its patch count."""
        cfg = self.cfg
        paths, arrays, own = _open_inputs(cfg, self.method)
        self.paths = paths
        # what identifies each input's content, taken once at the start: recorded in every
        # checkpoint, and compared by --resume (source_signature)
        self.input_signatures = json.loads(json.dumps(
            {k: _plain(source_signature(Path(v))) for k, v in paths.items()}
        ))  # fmt: skip
        primary = next(iter(paths))
        self.stats = (
            stats if stats is not None else statistics_hook(self.method, cfg.options, own, paths)
        )
        z, y, x = (int(s) for s in arrays[primary].shape)
        shape = (z, y, x)
        patch = self.patch
        self.planes = augment_planes(
            cfg.augment_planes, self.stats[primary]["voxel_size_angstrom"], patch
        )
        train_region, self.val_region = split_regions(
            shape, patch, cfg.val_fraction if cfg.val_patches else 0.0
        )
        self.train_region = train_region
        self.sampler = self._train_sampler(arrays, train_region, rank)
        return arrays, math.prod(s // p for s, p in zip(shape, patch, strict=True))

    def _train_sampler(self, arrays: dict[str, Any], region: Region, rank: int) -> PatchSampler:
        """The training patch sampler: its own seed per rank, the foreground mask if asked."""
        cfg = self.cfg
        mask, factor = (None, 1)
        if cfg.foreground_mask:
            mask, factor = _mask_from_pyramid(self.paths[next(iter(self.paths))])
        return PatchSampler(
            arrays,
            self.stats,
            self.patch,
            region,
            seed=cfg.seed + 7919 * rank,  # each rank draws its own patches
            mask=mask,
            mask_factor=factor,
            augment=cfg.augment,
            subset=self.method.patch_subset(cfg.options),
            planes=self.planes,
        )

    def _validation_set(self, arrays: dict[str, Any]) -> list[dict[str, np.ndarray]]:
        """The fixed validation patches (from the held-back region), read once."""
        cfg = self.cfg
        if self.val_region is None:
            return []
        vs = PatchSampler(
            arrays,
            self.stats,
            self.patch,
            self.val_region,
            seed=cfg.seed + 2,
            augment=False,
            planes=self.planes,
            prefetch=1,
            workers=1,
            subset=self.method.patch_subset(cfg.options),
        )
        val_set = [
            vs.read(o, a, n) for o, a, n in vs.fixed_patches(cfg.val_patches, cfg.seed + 2)
        ]
        vs.close()
        return val_set

    @property
    def step(self) -> int:
        """Optimiser steps taken."""
        return self.state.step

    # --- the update every method's step calls ------------------------------------------
    def update(self, loss: torch.Tensor, optimizer: str, sync: bool = False) -> None:
        """Stop on a non-finite loss (on every rank together), else zero-grad, backward, step.

        ``sync``: average the optimiser's gradients over the ranks before stepping (networks
        used without their DDP wrapper).
        """
        finite = torch.isfinite(loss.detach()).float()
        if self.world > 1:  # every rank stops together
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        if not bool(finite):
            ck = self.out / "last.pt"
            kept = (
                f"the last good checkpoint {ck} (epoch {self.epoch}) is kept"
                if self.epoch > 0 and ck.exists()
                else "no checkpoint was written (it diverged in the first epoch): lower --lr "
                "or check the input"
            )
            raise TrainingDiverged(
                f"{self.out}: loss became {float(loss.detach())} at step {self.step + 1} "
                f"(epoch {self.epoch + 1}); stopped, {kept}"
            )
        opt = self.state.optimizers[optimizer]
        if optimizer in self.lr_spans:
            factor = lr_factor(self.lr_schedule, self.step, *self.lr_spans[optimizer])
            for group, base in zip(opt.param_groups, self.base_lrs[optimizer], strict=True):
                group["lr"] = base * factor
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if sync and self.world > 1:
            for group in opt.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        torch.distributed.all_reduce(p.grad)
                        p.grad /= self.world
        opt.step()

    def current_lr(self) -> float:
        """The learning rate of the main optimiser's first group at its last step."""
        name = next(iter(self.lr_spans), next(iter(self.state.optimizers)))
        return float(self.state.optimizers[name].param_groups[0]["lr"])

    # --- checkpoints ---------------------------------------------------------------------
    def payload(self) -> dict[str, Any]:
        return {
            "method": self.method.name,
            "options": self.cfg.options.model_dump(mode="json"),
            "config": self.cfg.model_dump(mode="json", exclude={"options"}),
            "networks": {k: v.state_dict() for k, v in self.state.networks.items()},
            "optimizers": {k: v.state_dict() for k, v in self.state.optimizers.items()},
            "normalisation": {k: _plain(v) for k, v in self.stats.items()},
            "epoch": self.epoch,
            "step": self.step,
            "total_steps": self.state.total_steps,
            "input_signatures": self.input_signatures,
            "best_val": self.best_val,
            "rng": {
                "torch": torch.get_rng_state(),
                "blind_spot": self.gen.get_state(),
                "sampler": _plain(self.sampler.get_state()),
            },
            "provenance": self.provenance(),
        }

    def provenance(self) -> dict[str, str]:
        """The inputs' paths (or the dataset's source) and the version, for the checkpoint."""
        if self.dataset is not None:
            return dict(self.dataset.provenance)
        return {
            **{k: str(Path(v).resolve()) for k, v in self.paths.items()},
            "scnet_dask_version": __version__,
        }

    def restore(self, data: dict[str, Any]) -> None:
        ck = self.out / "last.pt"
        if data.get("method") != self.method.name:
            raise InputError(
                f"{ck}: checkpoint was trained with method={data.get('method')!r}, "
                f"this run asks for {self.method.name!r}"
            )
        # options of a checkpoint from before upsample_axes existed: its block was z and x
        old = {**data.get("config", {}), **with_axes(data.get("options", {}), self.method)}
        new = {**self.cfg.model_dump(mode="json"), **self.cfg.options.model_dump(mode="json")}
        for key in ("features", "upsample", "upsample_axes", "patch_size"):
            if key in new and old.get(key) != new[key]:
                raise InputError(
                    f"{ck}: checkpoint was trained with {key}={old.get(key)!r}, "
                    f"this run asks for {new[key]!r}"
                )
        self._check_same_inputs(data)
        self._check_same_schedule(data)
        try:
            for k, net in self.state.networks.items():
                net.load_state_dict(data["networks"][k])
            for k, opt in self.state.optimizers.items():
                opt.load_state_dict(data["optimizers"][k])
        except (RuntimeError, KeyError, ValueError) as e:
            raise InputError(f"{ck}: incompatible checkpoint ({e})") from e
        self.epoch, self.state.step, self.best_val = (
            int(data["epoch"]),
            int(data["step"]),
            float(data["best_val"]),
        )
        torch.set_rng_state(data["rng"]["torch"])
        if self.rank == 0:  # other ranks keep their own streams (see train_distributed)
            self.gen.set_state(data["rng"]["blind_spot"])
            self.sampler.set_state(data["rng"]["sampler"])

    def _check_same_inputs(self, data: dict[str, Any]) -> None:
        """``--resume`` continues a run on its own inputs: another volume is refused.

        A dataset run's tomograms were checked against its record (``dataset.json``).
        """
        ck = self.out / "last.pt"
        if self.dataset is not None:
            return
        old = data.get("input_signatures")
        if old is None:  # a checkpoint of an earlier version: compare the paths
            prov = data.get("provenance", {})
            old_paths = {k: prov.get(k) for k in self.paths}
            new_paths = {k: str(Path(v).resolve()) for k, v in self.paths.items()}
            changed = [k for k in self.paths if old_paths[k] not in (None, new_paths[k])]
        else:
            new = self.input_signatures
            changed = [k for k in new if k in old and old[k] != new[k]]
        if changed:
            k = changed[0]
            raise InputError(
                f"{ck}: the run was trained on another {k} volume than {self.paths[k]} (or it "
                "changed since); --resume continues a run on its own inputs: give the same "
                "ones, or start a new run in another --out"
            )

    def _check_same_schedule(self, data: dict[str, Any]) -> None:
        """``--resume`` with a schedule that spans the run needs the run's own length."""
        old_total = data.get("total_steps")
        new_total = self.state.total_steps
        if old_total is None or int(old_total) == new_total:
            return
        warmup = float(getattr(self.cfg.options, "rec_warmup", 0.0) or 0.0)
        if self.lr_schedule == "constant" and warmup == 0:
            return  # nothing depends on the run's length: more epochs simply continue it
        old_epochs = data.get("config", {}).get("epochs")
        raise InputError(
            f"{self.out / 'last.pt'}: this run was planned as {old_total} steps "
            f"({old_epochs} epochs) and its {self.lr_schedule} learning rate"
            f"{' and rec_warmup' if warmup else ''} follow that length; --resume with "
            f"{new_total} steps would not equal a straight run: resume with --epochs "
            f"{old_epochs} (and the same --steps-per-epoch), or start a new run"
        )

    def set_mode(self, training: bool) -> None:
        for net in self.state.networks.values():
            net.train(training)

    def validate(self, patches: list[dict[str, np.ndarray]] | None = None) -> float:
        """Mean validation loss over ``patches`` (default: the held-back region's); NaN: none."""
        patches = self.val_set if patches is None else patches
        if not patches:
            return math.nan
        self.set_mode(False)
        gen = torch.Generator().manual_seed(self.cfg.seed + 3)
        vals = []
        with torch.no_grad():
            for sample in patches:
                batch = {k: v[None, None] for k, v in sample.items()}
                terms = self.method.step(self.state, batch, gen, train=False)
                vals.append(float(terms["total"]))
        self.set_mode(True)
        return float(np.mean(vals))

    def validation_columns(self) -> list[str]:
        """``log.csv``'s validation columns: none for one volume; ``val``, ``val_NAME`` else."""
        if self.dataset is None:
            return []
        return ["val", *(f"val_{name}" for name in self.val_tomograms)]

    def validate_tomograms(self) -> dict[str, float]:
        """Validation loss of each held-back tomogram (``--val-tomograms``), by name."""
        return {name: self.validate(p) for name, p in self.val_tomograms.items()}

    def preview(self) -> dict[str, np.ndarray]:
        """Volumes (inputs and output) of the first validation patch, for the epoch figure."""
        self.set_mode(False)
        try:
            return self.method.preview(self.state, self.val_set[0])
        finally:
            self.set_mode(True)


def _plain(obj: Any) -> Any:
    """Convert numpy scalars and tuples into plain Python for ``weights_only`` loading."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
