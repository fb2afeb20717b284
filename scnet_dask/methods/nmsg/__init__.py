"""NMSG: a learned noise model (the noise bank and its generator) plus pairs from one tomogram."""

from scnet_dask.methods.nmsg.method import Nmsg

__all__ = ["Nmsg"]
