"""Restricted unpickling for dataset files that are plain dicts of lists, bytes and numpy arrays.

The CIFAR "python version" batches are pickles. A pickle can call any importable function while it
loads, so a tampered file could run code; this unpickler resolves only the few globals numpy needs
to rebuild an array and refuses everything else before it is called.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from train.errors import BadInput


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes, limited to latin-1."""
    if codecs.lookup(encoding).name != "iso8859-1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin-1")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    sample = np.zeros(1, dtype=np.uint8)
    reconstruct = sample.__reduce__()[0]
    frombuffer = sample.__reduce_ex__(5)[0]  # numpy's _frombuffer (protocol-5 arrays)
    allowed: dict[tuple[str, str], Any] = {("_codecs", "encode"): _latin1_encode}
    for core in ("numpy.core", "numpy._core"):  # numpy 1 and numpy 2 spell the module differently
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


class ArrayUnpickler(pickle.Unpickler):
    """An Unpickler whose only importable names rebuild numpy arrays."""

    allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def load_array_pickle(path: Path, what: str) -> Any:
    """Unpickle ``path`` allowing only plain data and numpy arrays; any problem is ``BadInput``.

    ``latin1`` decodes Python 2 strings the way numpy expects for arrays pickled by Python 2.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadInput(f"{what} {path}: cannot read ({e.strerror})") from None
    try:
        return ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        if "is not allowed" in str(e):
            raise BadInput(
                f"{what} {path}: refused to unpickle ({e}); the file holds more than arrays and "
                "lists, so it is not an original dataset file: replace it with a fresh copy"
            ) from None
        raise BadInput(f"{what} {path}: not a readable pickle ({e}); is it truncated?") from None
    except (
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        MemoryError,
    ) as e:
        raise BadInput(
            f"{what} {path}: not a readable pickle ({type(e).__name__}: {str(e)[:80]}); is it truncated?"
        ) from None
