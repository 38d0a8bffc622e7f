"""Errors shared by the deployment side; ``BadInput`` is the training package's, re-exported."""

from train.errors import BadInput

__all__ = ["BadInput", "MissingBackend"]


class MissingBackend(BadInput):
    """A requested backend (TensorRT, CUDA, a GPU) is not usable on this machine."""
