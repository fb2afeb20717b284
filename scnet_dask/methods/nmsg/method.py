"""NMSG — our reconstruction: a learned 3-D noise model makes training pairs from one tomogram.

NMSG (Yang, Zang, Li, Zhang, Zhang, Han, Ultramicroscopy 255, 2024) learns the noise of a
cryo-ET volume with a GAN, generates noisy pairs from the single volume and trains a denoiser
with a loss that keeps structure and local smoothness ("sparsity guidance"). This module is
**our reconstruction** from the abstract and the designs it stands on (``../shared/METHODS.md``
§1), written before the authors' code (repository ``ZhidongYang/NMSG``) was known; that code
differs (its pairs, its three-term loss, a 2-D WGAN-GP noise synthesiser). The choices that are
ours:

1. **Noise cubes** (:mod:`scnet_dask.methods.nmsg.noise_bank`): smooth cubes found out of core
   by GCBD's rule, adapted to tomograms (sub-cube mean deviation in units of the cube's std),
   screened on a coarse pyramid level; mean removed; stored in ``RUN/noise.zarr``
   (``noise_bank.path``). 10 % are held back.
2. **Noise model** (:mod:`scnet_dask.model.gan`): a fully convolutional generator of stationary
   noise from a white field, trained for the first ``gan.steps`` steps of the run on a
   **spectral term** (log ratio of the batch's power spectrum to the real cubes', weight
   ``gan.lambda_spectrum``), optionally plus a WGAN-GP adversarial term (weight
   ``gan.lambda_adversarial``; ``gan.critic_steps`` critic updates per generator update, gradient
   penalty ``gan.gp_weight``); Adam with a cosine decay of ``gan.lr``. A reconstructed tomogram's
   noise is a sum over many projections, close to Gaussian, and a stationary Gaussian field is
   fixed by its spectrum: spectral matching is the stable fit. Measured on correlated Gaussian
   noise (16³ cubes, 200 steps, 8 features, spectral weight 1): spectral term alone, the true
   spectrum matched within 8 % per band (90 % power band); plus the adversarial term at weight
   0.1 (2 critic steps), 48 % (the critic pulls the lowest band); at weight 1 (5 critic steps,
   spectral weight 10), 18 % at 3x the time. So the adversarial term is off by default
   (``gan.lambda_adversarial 0``: no critic is trained), an option for noise far from Gaussian.
   At the end of that phase ``RUN/noise_model.json`` and ``.png`` compare
   generated with held-back real cubes (spectrum per band, histogram, autocorrelation).
3. **Pairs** (``--pair-form``), for the remaining steps, from patches ``y`` of the tomogram:

   - ``noisier2noise`` (Moran et al., CVPR 2020): input ``z = y + α·G(w)``, target
     ``y``; the network learns ``E[y | z]`` and the clean estimate is
     ``((1 + α²)·f(z) − z) / α²``. At ``denoise`` each tile gets ``passes`` noise draws (seeded
     by the tile's position, so the output is deterministic and resumable) and the estimates are
     averaged. This is unbiased when the generated noise has the tomogram's noise statistics.
   - ``n2n`` (default): input ``y + G(w₁)``, target ``y + G(w₂)`` — the two sides share ``y``'s
     own noise, so in theory the network learns to remove only the added noise; ``denoise``
     applies it to ``y``. Measured better at a CPU budget (rec15, 400 + 400 steps: 33.00 dB,
     SSIM 0.719 vs 31.99 dB, 0.548 for Noisier2Noise with 4 draws), hence the default: the
     Noisier2Noise correction doubles the network's error.
4. **Sparsity guidance**: with ``--prior``, SC-Net's Sobel term (the clean estimate's 3-D
   Sobel gradients against the prior's), weight ``lambda_smooth``.

The denoiser is SC-Net's U-Net. The checkpoint holds the three networks (``model``,
``generator``, ``critic``) and their optimisers; ``--resume`` continues either phase.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scnet_dask.errors import InputError
from scnet_dask.io import open_source
from scnet_dask.methods._unet import (
    NetworkPredictor,
    UNetMethod,
)
from scnet_dask.methods.base import (
    PredictContext,
    TilePredictor,
    TrainState,
    lr_factor,
)
from scnet_dask.methods.nmsg.diagnostics import noise_diagnostics, plot_noise_diagnostics
from scnet_dask.methods.nmsg.noise_bank import NoiseBankSpec, extract_noise_bank
from scnet_dask.methods.nmsg.options import NmsgDenoiseOptions, NmsgTrainOptions
from scnet_dask.methods.nmsg.predictor import NmsgPredictor, _bank, _gen
from scnet_dask.model.gan import (
    NoiseCritic,
    NoiseGenerator,
    gradient_penalty,
    spectral_loss,
)
from scnet_dask.model.losses import loss_smooth
from scnet_dask.model.unet import SCNetUNet
from scnet_dask.science.stats import volume_statistics

__all__ = ["Nmsg"]

log = logging.getLogger(__name__)


def _flip(x: np.ndarray, rng: torch.Generator) -> np.ndarray:
    """Random flips along z, y, x (a stationary field's spectrum is flip-symmetric)."""
    axes = [a for a in (1, 2, 3) if bool(torch.randint(2, (1,), generator=rng))]
    return np.ascontiguousarray(np.flip(x, tuple(axes))) if axes else x


class Nmsg(UNetMethod):
    """NMSG (our reconstruction): GAN noise model, then Noisier2Noise/N2N on generated pairs."""

    name = "nmsg"
    summary = "NMSG (our reconstruction): learned noise model + pairs from one tomogram."
    inputs = ("noisy", "prior")
    train_options = NmsgTrainOptions
    denoise_options = NmsgDenoiseOptions
    log_terms = ("total", "denoise", "smooth", "critic", "wasserstein", "spectrum")

    def input_paths(
        self, primary: Path, options: Any, run_dir: Path | None = None
    ) -> dict[str, Path]:
        """The tomogram, and the prior when given."""
        paths = {"noisy": Path(primary)}
        if getattr(options, "prior", None) is not None:
            paths["prior"] = Path(options.prior)
        return paths

    def build(self, options: Any) -> dict[str, torch.nn.Module]:
        """The U-Net ``model``, the noise ``generator`` and its ``critic``."""
        return {
            "model": SCNetUNet(features=options.features, upsample=options.upsample),
            "generator": NoiseGenerator(options.gan.features, layers=options.gan.layers),
            "critic": NoiseCritic(options.gan.features),
        }

    def optimizers(
        self, networks: dict[str, torch.nn.Module], options: Any, config: Any
    ) -> dict[str, torch.optim.Optimizer]:
        """Adam for the U-Net (the run's lr, betas); Adam(gan.lr, (0.5, 0.9)) for the GAN."""
        return {
            "model": torch.optim.Adam(
                networks["model"].parameters(), lr=config.lr, betas=(config.beta1, config.beta2)
            ),
            **{
                k: torch.optim.Adam(networks[k].parameters(), lr=options.gan.lr, betas=(0.5, 0.9))
                for k in ("generator", "critic")
            },
        }

    def prepare(self, config: Any, show_progress: bool = True) -> None:
        """Find the noise cubes (or reuse them) before training; warn if no denoiser steps."""
        o = config.options
        nb = o.noise_bank
        if config.steps_per_epoch and config.epochs * config.steps_per_epoch <= o.gan.steps:
            log.warning(
                "gan.steps %d leaves no denoiser steps in %d epoch(s) of %d steps: this run "
                "trains the noise model only; continue with --resume and more --epochs",
                o.gan.steps, config.epochs, config.steps_per_epoch,
            )  # fmt: skip
        if nb.cube % 2:
            raise InputError(f"noise_bank.cube must be even, got {nb.cube}")
        path = Path(nb.path) if nb.path is not None else Path(config.out) / "noise.zarr"
        nb.path = path
        std = float(volume_statistics(open_source(config.noisy))["std"])
        spec = NoiseBankSpec(
            nb.cube, nb.rule, nb.mu, nb.gamma, nb.tolerance,
            nb.max_cubes, min(nb.min_cubes, nb.max_cubes), nb.screen,
        )  # fmt: skip
        report = extract_noise_bank(Path(config.noisy), path, spec, std)
        log.info("NMSG noise cubes: %d (of %d tested)", report["found"], report["tested"])

    def lr_schedule_span(
        self, options: Any, optimizers: Iterable[str], total_steps: int
    ) -> dict[str, tuple[int, int]]:
        """``--lr-schedule`` drives the denoiser over its steps (the GAN has its own cosine)."""
        return {"model": (min(options.gan.steps, total_steps), total_steps)}

    def step(
        self, state: TrainState, batch: Mapping[str, np.ndarray], generator: torch.Generator,
        train: bool = True,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        """A noise-model step for the first ``gan.steps`` steps, then a denoiser step."""
        o: NmsgTrainOptions = state.options
        nan = torch.tensor(float("nan"))
        if state.step < o.gan.steps:
            if not train:  # the U-Net is untrained: no validation loss (best.pt stays open)
                return dict.fromkeys(self.log_terms, nan)
            terms = self._gan_step(state, generator)
            if state.step + 1 == o.gan.steps and state.lead and state.run_dir is not None:
                self.diagnose(state, state.run_dir, generator)
            return terms
        return self._denoise_step(state, batch, generator, train)

    def _gan_step(self, state: TrainState, generator: torch.Generator) -> dict[str, torch.Tensor]:
        o: NmsgTrainOptions = state.options
        bank = _bank(str(o.noise_bank.path))
        gen, critic = _gen(state.networks), state.networks["critic"]
        dev = state.device
        c = bank.train.shape[1]
        b = o.gan.batch
        lr = o.gan.lr * lr_factor("cosine", state.step, 0, o.gan.steps)
        for name in ("generator", "critic"):
            for group in state.optimizers[name].param_groups:
                group["lr"] = lr
        nan = torch.tensor(float("nan"))
        w, loss_d = nan, nan
        adversarial = o.gan.lambda_adversarial > 0
        for _ in range(o.gan.critic_steps if adversarial else 0):
            idx = torch.randint(len(bank.train), (b,), generator=generator).numpy()
            real = torch.from_numpy(_flip(bank.train[idx], generator)[:, None]).to(dev)
            with torch.no_grad():
                fake = gen.sample(b, (c, c, c), generator, dev)
            w = critic(real).mean() - critic(fake).mean()
            loss_d = -w + o.gan.gp_weight * gradient_penalty(critic, real, fake)
            state.update(loss_d, "critic", sync=True)
        fake = gen.sample(b, (c, c, c), generator, dev)
        spec = spectral_loss(fake, torch.from_numpy(bank.spectrum).to(dev))
        loss_g = o.gan.lambda_spectrum * spec
        if adversarial:
            loss_g = loss_g - o.gan.lambda_adversarial * critic(fake).mean()
        state.update(loss_g, "generator", sync=True)
        return {
            "total": loss_g.detach(),
            "denoise": nan,
            "smooth": nan,
            "critic": loss_d.detach(),
            "wasserstein": w.detach(),
            "spectrum": spec.detach(),
        }

    def _denoise_step(
        self, state: TrainState, batch: Mapping[str, np.ndarray], generator: torch.Generator,
        train: bool,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        o: NmsgTrainOptions = state.options
        dev = state.device
        y = torch.from_numpy(batch["noisy"]).to(dev, non_blocking=True)
        gen = _gen(state.networks)
        shape = tuple(int(s) for s in y.shape[2:])
        with torch.no_grad():
            m1 = gen.sample(y.shape[0], shape, generator, dev)
            if o.pair_form == "n2n":
                m2 = gen.sample(y.shape[0], shape, generator, dev)
        if o.pair_form == "n2n":
            x, target = y + m1, y + m2
        else:
            x, target = y + o.alpha * m1, y
        out = self.forward(state, x, train).float()
        rec = torch.mean((out - target) ** 2)
        smooth = torch.tensor(0.0, device=dev)
        if "prior" in batch and o.lambda_smooth > 0:
            a2 = o.alpha**2
            est = out if o.pair_form == "n2n" else ((1 + a2) * out - x) / a2
            p = torch.from_numpy(batch["prior"]).to(dev, non_blocking=True)
            smooth = loss_smooth(est, p)
        total = rec + o.lambda_smooth * smooth
        if train:
            state.update(total, "model")
        nan = torch.tensor(float("nan"))
        return {
            "total": total.detach(),
            "denoise": rec.detach(),
            "smooth": smooth.detach(),
            "critic": nan,
            "wasserstein": nan,
            "spectrum": nan,
        }

    def diagnose(
        self, state: TrainState, folder: Path, generator: torch.Generator | None = None
    ) -> dict[str, Any]:
        """Compare generated noise with the held-back real cubes; ``noise_model.json``/``.png``."""
        o = state.options
        bank = _bank(str(o.noise_bank.path))
        gen = _gen(state.networks)
        c = bank.held.shape[1]
        n = max(len(bank.held), 256)
        g = torch.Generator().manual_seed(12345) if generator is None else generator
        with torch.no_grad():
            fake = torch.cat(
                [gen.sample(min(64, n - i), (c, c, c), g, state.device) for i in range(0, n, 64)]
            )
        fake_np = fake[:, 0].float().cpu().numpy()
        diag = noise_diagnostics(bank.held, fake_np)
        diag["step"] = state.step + 1
        (folder / "noise_model.json").write_text(json.dumps(diag, indent=1))
        plot_noise_diagnostics(bank.held, fake_np, diag, folder / "noise_model.png")
        log.info(
            "noise model: spectrum within %.1f%% per band up to %.3f cycles/voxel, "
            "histogram W1 %.3f σ (held-back cubes)",
            100 * diag["max_band_error"], diag["k_power"], diag["wasserstein"],
        )  # fmt: skip
        return diag

    def preview(self, state: TrainState, sample: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """The patch, one generated-noise input and the clean estimate from it."""
        o = state.options
        y = torch.from_numpy(sample["noisy"][None, None]).to(state.device)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            m = _gen(state.networks).sample(1, tuple(y.shape[2:]), g, state.device)
            x = y + o.alpha * m
            out = state.networks["model"](x).float()
            if o.pair_form == "noisier2noise":
                out = ((1 + o.alpha**2) * out - x) / o.alpha**2
        return {
            "noisy": sample["noisy"],
            "with generated noise": x.cpu().numpy()[0, 0],
            "output": out.cpu().numpy()[0, 0],
        }

    def predictor(self, options: Any, ctx: PredictContext) -> tuple[TilePredictor, dict[str, Any]]:
        """The U-Net (and, for Noisier2Noise, the generator) of the checkpoint on tiles."""
        tr = self.trained(ctx)
        topts = tr.options
        geom = self.checked_geometry(tr, options, ctx)
        device = ctx.device
        details = self.details(tr, ctx, device)
        mean, std = self.tile_normalisation(options, ctx, tr)
        pred: TilePredictor
        if topts.pair_form == "n2n":  # the U-Net on the tile, as every U-Net method
            pred = NetworkPredictor(
                tr.path, ctx.checkpoint_sha256, device, ctx.amp, geom, mean=mean, std=std
            )
            details["passes"] = 1
            return pred, details
        geom = replace(geom, stochastic=True)
        pred = NmsgPredictor(
            tr.path, ctx.checkpoint_sha256, device, ctx.amp, geom, float(topts.alpha),
            int(options.passes), mean, std,
        )  # fmt: skip
        details["passes"] = int(options.passes)
        return pred, details
