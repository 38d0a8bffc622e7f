"""Tell an ONNX model, a ``.pt2`` program and a TensorRT engine apart by content, and read an
ONNX model's inputs.

Extensions lie (``.plan``, ``.trt``, ``.engine``, a renamed file), so the bytes decide: a zip
archive whose ``archive_format`` entry says ``pt2`` is a ``torch.export`` program (for the torch
backends); a file that parses as an ONNX ModelProto with a graph is ONNX; a file with the JSON
sidecar that ``chase-deploy build`` writes is one of our engines; anything else is refused,
except that the TensorRT backend may still try to deserialize it as an engine built elsewhere.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from chase_deploy.backends.base import InputSpec
from chase_deploy.backends.trt.sidecar import SIDECAR_SUFFIX, read_sidecar
from train.errors import BadInput, one_line

Kind = Literal["onnx", "pt2", "engine", "unknown"]


@dataclass(frozen=True)
class ModelFile:
    path: Path
    kind: Kind
    inputs: tuple[InputSpec, ...] = ()
    sidecar: dict | None = None
    why_not_onnx: str = ""  # the ONNX parse failure, for messages about unknown files

    def not_runnable(self, backend: str) -> BadInput:
        """The error for a file this backend cannot run."""
        if self.kind == "engine":
            return BadInput(f"{self.path} is a TensorRT engine: bench it with --backend tensorrt")
        if self.kind == "pt2":
            return BadInput(
                f"{self.path} is a PyTorch .pt2 program: bench it with --backend torch-cpu or "
                f"torch-cuda"
            )
        if self.kind == "onnx":
            return BadInput(
                f"{self.path} is an ONNX model: the torch backends run .pt2 programs (`slim` "
                f"writes dense.pt2 beside dense.onnx); bench ONNX with --backend ort-cpu"
            )
        return BadInput(
            f"{self.path} is neither an ONNX model ({self.why_not_onnx}), a .pt2 program nor a "
            f"TensorRT engine with the {self.path.name}{SIDECAR_SUFFIX} sidecar from "
            f"`chase-deploy build`"
        )


def inspect_model_file(path: str | Path) -> ModelFile:
    """Classify ``path`` as ONNX, one of our engines, or unknown; BadInput if it cannot be read."""
    path = Path(path)
    if not path.exists():
        raise BadInput(f"model file {path} does not exist")
    if path.is_dir():
        raise BadInput(f"{path} is a directory, not a model file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror or e}") from e
    if is_pt2(data):
        return ModelFile(path, "pt2")
    model, why = _parse_onnx(data)
    if model is not None:
        return ModelFile(path, "onnx", tuple(onnx_inputs(model)))
    sidecar = read_sidecar(path)
    if sidecar is not None:
        return ModelFile(path, "engine", sidecar=sidecar, why_not_onnx=why)
    return ModelFile(path, "unknown", why_not_onnx=why)


def is_pt2(data: bytes) -> bool:
    """A ``torch.export.save`` archive: a zip with ``<name>/archive_format`` reading ``pt2``."""
    if not data.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            marker = [n for n in archive.namelist() if n.endswith("/archive_format")]
            return bool(marker) and archive.read(marker[0]).strip() == b"pt2"
    except (zipfile.BadZipFile, OSError, KeyError):
        return False


def _parse_onnx(data: bytes):
    """(ModelProto, "") when ``data`` is an ONNX model, else (None, why not)."""
    import onnx

    if not data:
        return None, "the file is empty"
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # protobuf DecodeError and friends
        return None, f"ONNX parse failed: {one_line(e)}"
    if model.ir_version <= 0 or not model.graph.node or not model.opset_import:
        return None, "no ONNX graph in it"
    return model, ""


def onnx_inputs(model) -> list[InputSpec]:
    """The graph inputs that are fed at run time (initializers listed as inputs left out), each
    dynamic axis as None: the one reader of an ONNX model's inputs (backends, ``verify``)."""
    from onnx import helper

    initializers = {i.name for i in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        ttype = value.type.tensor_type
        dims = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in ttype.shape.dim
        )
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(ttype.elem_type))
        names = tuple(d.dim_param for d in ttype.shape.dim)
        specs.append(InputSpec(value.name, dims, dtype, names))
    return specs
