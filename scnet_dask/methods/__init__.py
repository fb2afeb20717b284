"""Denoising methods: one module each, found through a registry.

A **method** (:class:`~scnet_dask.methods.base.Method`) is one class in one module:

- ``name`` (the ``--method`` value) and a one-line ``summary``;
- ``inputs``: the named volumes its training step receives (``("noisy",)``,
  ``("noisy", "prior")``, ``("even", "odd")``, ``("input", "target")``); the first is the
  positional input of ``train``, the others are path fields of its training options;
- ``train_options`` (``None`` for methods that do not train) and ``denoise_options``: pydantic
  models (:class:`~scnet_dask.methods.base.Options`) whose fields become the command-line options
  and YAML keys of ``train`` and ``denoise`` (help text = the field's ``description``);
- ``build(options)``: its networks by name, and ``optimizers(networks, options, config)``: its
  optimisers by name (a GAN has two of each; the default is one Adam per network);
- ``step(state, batch, generator, train)``: one training step that does its own backward and
  optimiser steps through ``state.update(loss, optimizer_name)`` (which also stops the run on a
  non-finite loss); with ``train=False`` the same losses for validation, no update;
- ``predictor(options, ctx)``: a :class:`~scnet_dask.methods.base.TilePredictor` for ``denoise``
  (from the checkpoint in ``ctx`` for trained methods) and provenance details.

A **tile predictor** is a picklable callable over a (batch, z, y, x) array of tiles that carries
its :class:`~scnet_dask.methods.base.Geometry`: receptive margin per axis, the multiple tile
edges need, the post-filter σ, up-sampling, and whether it is stochastic (then the tiling gives
it one seed per tile, so the output is deterministic and ``--resume`` safe). The tiling derives
the halo from this geometry, never from method names.

The training engine (:mod:`scnet_dask.engine.train`) owns the loop, validation, logging, checkpoints
(networks, optimisers, method options, RNG states, normalisation), resume and DDP; the patch
sampler (:mod:`scnet_dask.engine.sampling`) reads any number of aligned named volumes.

Adding a method
---------------
Write ``scnet_dask/methods/mymethod.py`` with a ``Method`` subclass and add it to
``BUILTIN`` below (or call :func:`register` from your own code before the CLI runs): its
options appear in ``train``/``denoise --help``, YAML configs, ``evaluate`` and checkpoints
without touching any other file. ``tests/test_methods.py`` registers a toy method from the test
file itself and trains and denoises with it through the CLI.
"""

from __future__ import annotations

from scnet_dask.methods.auto import Auto
from scnet_dask.methods.base import (
    Geometry,
    Method,
    NoOptions,
    Options,
    PredictContext,
    TilePredictor,
    Trained,
    TrainState,
)
from scnet_dask.methods.bm4d import Bm4d
from scnet_dask.methods.fourier_n2n import FourierN2n
from scnet_dask.methods.gaussian import Gaussian
from scnet_dask.methods.lowpass import Lowpass
from scnet_dask.methods.n2n import N2n
from scnet_dask.methods.n2v import N2v
from scnet_dask.methods.nmsg import Nmsg
from scnet_dask.methods.registry import get, names, register, trainable, unregister
from scnet_dask.methods.s2s import S2s
from scnet_dask.methods.scnet import Scnet
from scnet_dask.methods.supervised import Supervised
from scnet_dask.methods.topaz import Topaz3d
from scnet_dask.methods.vem_n2n import VemN2n

__all__ = [
    "Geometry",
    "Method",
    "NoOptions",
    "Options",
    "PredictContext",
    "TilePredictor",
    "Trained",
    "TrainState",
    "register",
    "unregister",
    "get",
    "names",
    "trainable",
    "BUILTIN",
]

#: The built-in methods, registered in this order (the order of ``--method`` choices).
BUILTIN: tuple[type[Method], ...] = (
    Scnet, N2v, N2n, S2s, FourierN2n, Nmsg, Supervised, VemN2n, Gaussian, Lowpass, Topaz3d, Bm4d,
    Auto,
)  # fmt: skip

for _cls in BUILTIN:
    register(_cls())
