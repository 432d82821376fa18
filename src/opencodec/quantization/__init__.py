"""Residual vector quantisation."""

from .rvq import QuantizedResult, ResidualVectorQuantizer
from .vq import EuclideanCodebook, VectorQuantization, kmeans

__all__ = ["QuantizedResult", "ResidualVectorQuantizer", "EuclideanCodebook", "VectorQuantization", "kmeans"]
