"""What s2s and fourier-n2n share: the dropout U-Net, and ensembles of dropout passes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from scnet_dask.errors import InputError
from scnet_dask.methods._unet import UNetMethod
from scnet_dask.methods.base import PredictContext
from scnet_dask.methods.runtime import device_lock, record_forward
from scnet_dask.model.dropout_unet import DropoutUNet

__all__ = ["DropoutMethod", "mc_dropout"]


class DropoutMethod(UNetMethod):
    """A method whose network, ``model``, is a :class:`DropoutUNet`."""

    def build(self, options: Any) -> dict[str, torch.nn.Module]:
        """One :class:`DropoutUNet`, ``model``, from ``features``, ``depth`` and ``dropout``."""
        return {"model": DropoutUNet(options.features, options.depth, options.dropout)}

    def dropout_net(self, ctx: PredictContext) -> tuple[Any, DropoutUNet]:
        """The checked checkpoint of ``ctx`` and its dropout U-Net."""
        tr = self.trained(ctx)
        net = tr.networks["model"]
        if not isinstance(net, DropoutUNet):
            raise InputError(f"{ctx.checkpoint}: network is not a dropout U-Net")
        return tr, net


@contextmanager
def mc_dropout(net: DropoutUNet, device: str, voxels: int) -> Iterator[None]:
    """Hold ``device``'s lock with the decoder dropout on; record ``voxels`` of forwards."""
    with device_lock(device):
        t0 = time.perf_counter()
        net.mc_dropout = True
        try:
            yield
        finally:
            net.mc_dropout = False
        record_forward(time.perf_counter() - t0, voxels)
