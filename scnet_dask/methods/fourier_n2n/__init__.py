"""Fourier-sampling Noise2Noise (F2Fd): pairs from a pool of masked spectra, out of core."""

from scnet_dask.methods.fourier_n2n.method import FourierN2n

__all__ = ["FourierN2n"]
