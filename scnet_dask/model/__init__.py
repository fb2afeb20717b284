"""SC-Net's network, blind-spot replacement, losses and checkpoints."""

from scnet_dask.model.blindspot import blind_spot_replace
from scnet_dask.model.losses import LossWeights, scnet_losses
from scnet_dask.model.unet import SCNetUNet

__all__ = ["SCNetUNet", "blind_spot_replace", "scnet_losses", "LossWeights"]
