"""IDX files (the MNIST family's format), plain or gzip-compressed, read strictly.

Layout: a big-endian 32-bit magic number (0x00 0x00, element type, number of dimensions), one
big-endian 32-bit size per dimension, then the elements. Only unsigned bytes (type 0x08) are used
by MNIST-style data: magic 2051 for images (3 dims) and 2049 for labels (1 dim).
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from train.errors import BadInput

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array stored in ``path``; a wrong magic number, a truncated file or trailing bytes are ``BadInput``."""
    raw = read_maybe_gzip(path)
    if len(raw) < 4:
        raise BadInput(
            f"IDX file {path}: truncated ({len(raw)} bytes, no magic number); replace it"
        )
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        kind = "images" if magic == IMAGES_MAGIC else "labels"
        raise BadInput(
            f"IDX file {path}: magic number {got}, expected {magic} (uint8 {kind}); "
            "not an IDX file of this kind, or swapped with another file"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise BadInput(f"IDX file {path}: truncated ({len(raw)} bytes, shorter than its header)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    want = math.prod(dims)
    have = len(raw) - header
    if have < want:
        raise BadInput(
            f"IDX file {path}: truncated: dimensions {dims} need {want} bytes of data, found {have}"
        )
    if have > want:
        raise BadInput(
            f"IDX file {path}: {have - want} bytes past the end of its {dims} data; corrupt file"
        )
    return np.frombuffer(raw, dtype=np.uint8, count=want, offset=header).reshape(dims)


def read_maybe_gzip(path: Path) -> bytes:
    """The file's bytes, gunzipped when the name ends in ``.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise BadInput(f"IDX file {path}: broken gzip data ({e}); is it truncated?") from None
    except OSError as e:
        raise BadInput(f"IDX file {path}: cannot read ({e.strerror or e})") from None
