"""NMSG's noise-model phase: the two synthesisers, one training step each, their diagnostics.

``--noise-model spectral3d`` (ours): :class:`scnet_dask.model.gan.NoiseGenerator`, a stationary
3-D generator fitted to the noise cubes' power spectrum (optionally plus a WGAN-GP term).
``--noise-model wgan2d`` (the authors'): :class:`scnet_dask.model.gan2d.NoiseGenerator2D`, a
2-D WGAN-GP trained on z-sections of the same cubes, stacked section by section.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scnet_dask.errors import InputError
from scnet_dask.methods.base import TrainState, lr_factor
from scnet_dask.methods.nmsg.diagnostics import noise_diagnostics, plot_noise_diagnostics
from scnet_dask.methods.nmsg.predictor import _bank, _gen
from scnet_dask.model.gan import NoiseCritic, NoiseGenerator, gradient_penalty, spectral_loss
from scnet_dask.model.gan2d import NoiseCritic2D, NoiseGenerator2D

__all__ = ["build_noise_model", "noise_step", "diagnose"]

log = logging.getLogger(__name__)


def _flip(x: np.ndarray, rng: torch.Generator, axes: tuple[int, ...] = (1, 2, 3)) -> np.ndarray:
    """Random flips along ``axes`` (a stationary field's spectrum is flip-symmetric)."""
    chosen = [a for a in axes if bool(torch.randint(2, (1,), generator=rng))]
    return np.ascontiguousarray(np.flip(x, tuple(chosen))) if chosen else x


def build_noise_model(options: Any) -> dict[str, torch.nn.Module]:
    """The ``generator`` and ``critic`` of ``options.noise_model``.

    Raises
    ------
    InputError
        ``wgan2d`` with a noise cube edge that is not a power of two.

    """
    g = options.gan
    if options.noise_model == "wgan2d":
        c = int(options.noise_bank.cube)
        if c & (c - 1):
            raise InputError(
                f"--noise-model wgan2d makes images of the noise cube's edge, which must be a "
                f"power of two (8, 16, 32, 64), got noise_bank.cube {c}"
            )
        return {
            "generator": NoiseGenerator2D(c, g.features),
            "critic": NoiseCritic2D(c, g.features),
        }
    return {
        "generator": NoiseGenerator(g.features, layers=g.layers),
        "critic": NoiseCritic(g.features),
    }


def _set_lr(state: TrainState) -> None:
    o = state.options
    lr = o.gan.lr * lr_factor("cosine", state.step, 0, o.gan.steps)
    for name in ("generator", "critic"):
        for group in state.optimizers[name].param_groups:
            group["lr"] = lr


def noise_step(state: TrainState, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One step of the noise model (its critic steps first); the terms to log."""
    _set_lr(state)
    if state.options.noise_model == "wgan2d":
        return _step_2d(state, generator)
    return _step_3d(state, generator)


def _step_3d(state: TrainState, generator: torch.Generator) -> dict[str, torch.Tensor]:
    o = state.options
    bank = _bank(str(o.noise_bank.path))
    gen, critic = _gen(state.networks), state.networks["critic"]
    dev = state.device
    c = bank.train.shape[1]
    b = o.gan.batch
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
    return _terms(loss_g, loss_d, w, spec)


def _sections(bank: np.ndarray, b: int, rng: torch.Generator) -> np.ndarray:
    """``b`` random z-sections (b, c, c) of the cubes, randomly flipped in y and x."""
    idx = torch.randint(len(bank), (b,), generator=rng).numpy()
    zi = torch.randint(bank.shape[1], (b,), generator=rng).numpy()
    return _flip(bank[idx, zi], rng, (1, 2))


def _step_2d(state: TrainState, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """WGAN-GP on z-sections: ``gan.critic_steps`` critic updates, one generator update."""
    o = state.options
    bank = _bank(str(o.noise_bank.path))
    gen, critic = state.networks["generator"], state.networks["critic"]
    if not isinstance(gen, NoiseGenerator2D):
        raise InputError(f"the generator is a {type(gen).__name__}, not a NoiseGenerator2D")
    dev = state.device
    b = o.gan.batch
    w = loss_d = torch.tensor(float("nan"))
    for _ in range(o.gan.critic_steps):
        real = torch.from_numpy(_sections(bank.train, b, generator)[:, None]).to(dev)
        with torch.no_grad():
            fake = gen.images(b, generator, dev)
        w = critic(real).mean() - critic(fake).mean()
        loss_d = -w + o.gan.gp_weight * gradient_penalty(critic, real, fake)
        state.update(loss_d, "critic", sync=True)
    loss_g = -critic(gen.images(b, generator, dev)).mean()
    state.update(loss_g, "generator", sync=True)
    return _terms(loss_g, loss_d, w, torch.tensor(float("nan")))


def _terms(
    loss_g: torch.Tensor, loss_d: torch.Tensor, w: torch.Tensor, spec: torch.Tensor
) -> dict[str, torch.Tensor]:
    nan = torch.tensor(float("nan"))
    return {
        "total": loss_g.detach(),
        "denoise": nan,
        "smooth": nan,
        "guide": nan,
        "critic": loss_d.detach(),
        "wasserstein": w.detach(),
        "spectrum": spec.detach(),
    }


def diagnose(
    state: TrainState, folder: Path, generator: torch.Generator | None = None
) -> dict[str, Any]:
    """Compare generated noise with the held-back real cubes; ``noise_model.json``/``.png``.

    Generated cubes come from the model's own ``sample`` (for ``wgan2d``: c sections of c x c
    images), so the per-axis autocorrelation shows what a 2-D model misses along z.
    """
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
    diag["noise_model"] = o.noise_model
    (folder / "noise_model.json").write_text(json.dumps(diag, indent=1))
    plot_noise_diagnostics(bank.held, fake_np, diag, folder / "noise_model.png")
    log.info(
        "noise model (%s): spectrum within %.1f%% per band up to %.3f cycles/voxel, "
        "histogram W1 %.3f σ (held-back cubes)",
        o.noise_model, 100 * diag["max_band_error"], diag["k_power"], diag["wasserstein"],
    )  # fmt: skip
    return diag
