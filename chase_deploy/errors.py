"""Errors of the deployment side beyond ``BadInput``, which both packages import from
``train.errors``."""

from train.errors import BadInput

__all__ = ["MissingBackend"]


class MissingBackend(BadInput):
    """A requested backend (TensorRT, CUDA, a GPU) is not usable on this machine."""
