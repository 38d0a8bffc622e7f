"""PyTorch model -> ONNX, with names the channel plan can find and a check against PyTorch.

The graph has one input ``input`` and one output ``logits``, a dynamic batch axis, opset >= 18.

Two exporters, both fold eval-mode BatchNorm into the preceding Conv:
- ``dynamo`` (torch's default): initializers keep their parameter names (``layer1.0.conv1.weight``,
  the fused bias becomes ``layer1.0.conv1.weight_bias``), so plan keys match directly.
- ``torchscript`` (``dynamo=False``): fused weights get names like ``onnx::Conv_66``; the node
  names keep the module scope (``/layer1/layer1.0/conv1/Conv``), so we rename each layer's weight
  and bias initializers back to ``<module>.weight`` / ``<module>.bias``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
import torch

from chase_deploy.graph.reading import LAYER_OPS, torchscript_module_path
from chase_deploy.verify import is_lossless, session
from train.errors import BadInput, one_line

# The first line of torch.onnx.export's errors says only that the export failed.
TORCH_HEADER = ("Failed to export",)

EXPORTERS = ("dynamo", "torchscript")
MIN_OPSET = 18


@dataclass
class Exported:
    model: onnx.ModelProto
    exporter: str
    opset: int
    seconds: float
    max_abs_diff_torch: float  # ONNX Runtime vs PyTorch on the example batch
    session: object  # the ONNX Runtime session used for the check (reused by verification)


def export_onnx(
    model: torch.nn.Module,
    input_shape: tuple[int, ...],
    opset: int = MIN_OPSET,
    exporter: str = "dynamo",
) -> Exported:
    """Export ``model`` (in eval mode) for inputs of ``input_shape`` (N, C, H, W)."""
    if opset < MIN_OPSET:
        raise BadInput(f"--opset {opset}: chase-deploy exports opset {MIN_OPSET} or newer")
    if exporter not in EXPORTERS:
        raise BadInput(f"exporter {exporter!r}: use one of {', '.join(EXPORTERS)}")
    model = model.eval()
    # torch.export specializes a batch of 1, so trace with at least 2.
    shape = (max(2, int(input_shape[0])), *map(int, input_shape[1:]))
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    _check_runs(model, example)
    start = time.perf_counter()
    try:
        with _quiet():
            if exporter == "dynamo":
                proto = _export_dynamo(model, example, opset)
            else:
                proto = _export_torchscript(model, example, opset)
    except Exception as e:  # torch.onnx raises many types, each with a page of advice
        other = "torchscript" if exporter == "dynamo" else "dynamo"
        raise BadInput(
            f"torch.onnx ({exporter} exporter) cannot export the model: {one_line(e, skip=TORCH_HEADER)}; "
            f"try --exporter {other}, or make the model's forward exportable"
        ) from None
    seconds = time.perf_counter() - start
    sess = session(proto)
    diff = _check_against_torch(model, sess, example)
    return Exported(proto, exporter, opset, seconds, diff, sess)


def _check_runs(model: torch.nn.Module, example: torch.Tensor) -> None:
    """A shape the model cannot take is the caller's input, not an exporter failure."""
    try:
        with torch.no_grad():
            model(example)
    except Exception as e:  # whatever the user's forward raises for this shape
        shape = ",".join(map(str, example.shape))
        raise BadInput(
            f"the model does not run on input shape {shape} ({one_line(e, skip=TORCH_HEADER)}); pass "
            f"--input-shape N,C,H,W with the shape it was trained on"
        ) from None


def export_for_analysis(model: torch.nn.Module, sample_shape: tuple[int, ...]) -> onnx.ModelProto:
    """The graph the channel-group analysis reads: dynamo export of ``model`` (eval mode, on the
    CPU, a copy: the caller's model is not touched) for a batch of 2 samples of ``sample_shape``
    (e.g. [C, H, W]), constants folded but
    nothing fused, so every BatchNorm, bias and per-channel tensor keeps its parameter name and
    every node its module metadata."""
    import copy

    import onnx_ir as ir
    import onnxscript.optimizer

    copied = copy.deepcopy(model).cpu().eval()
    shape = (2, *map(int, sample_shape))
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(
                copied, (example,), None, dynamo=True, optimize=False, verbose=False
            )
    except Exception as e:  # noqa: BLE001 - torch.export raises many types
        raise BadInput(
            f"the model cannot be traced for the channel analysis (torch.onnx.export on an input "
            f"of shape {list(shape)}): {one_line(e, 300)}"
        ) from None
    graph_model = program.model
    onnxscript.optimizer.fold_constants(graph_model)
    ir.passes.common.RemoveUnusedNodesPass()(graph_model)
    ir.passes.common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(
        graph_model
    )
    return ir.serde.serialize_model(graph_model)


def _export_dynamo(model: torch.nn.Module, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    program = torch.onnx.export(
        model,
        (example,),
        None,
        dynamo=True,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        opset_version=opset,
        optimize=True,
        verbose=False,
    )
    return program.model_proto


def _export_torchscript(
    model: torch.nn.Module, example: torch.Tensor, opset: int
) -> onnx.ModelProto:
    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        (example,),
        buffer,
        dynamo=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=opset,
        do_constant_folding=True,
    )
    proto = onnx.load_from_string(buffer.getvalue())
    restore_layer_names(proto)
    return proto


def restore_layer_names(model: onnx.ModelProto) -> dict[str, str]:
    """Rename anonymous layer weights (``onnx::Conv_66``) to ``<module>.weight``/``.bias`` using
    TorchScript node scopes; returns old -> new names. Shared or already named tensors stay."""
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    taken = set(initializers) | {o for n in graph.node for o in n.output}
    renames: dict[str, str] = {}
    for node in graph.node:
        module = torchscript_module_path(node.name) if node.op_type in LAYER_OPS else None
        if not module:
            continue
        for index, suffix in ((1, "weight"), (2, "bias")):
            if index >= len(node.input):
                continue
            old, new = node.input[index], f"{module}.{suffix}"
            if (
                old in initializers
                and old.startswith("onnx::")
                and uses[old] == 1
                and new not in taken
            ):
                renames[old] = new
                taken.add(new)
    for old, new in renames.items():
        initializers[old].name = new
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    return renames


def _check_against_torch(model: torch.nn.Module, sess, example: torch.Tensor) -> float:
    """ONNX Runtime must reproduce PyTorch on the example batch, or the export is broken."""
    with torch.no_grad():
        expected = model(example)
    expected = expected[0] if isinstance(expected, (tuple, list)) else expected
    expected = expected.detach().numpy().astype(np.float64)
    actual = sess.run(None, {"input": example.numpy()})[0].astype(np.float64)
    diff = float(np.max(np.abs(expected - actual), initial=0.0))
    if not is_lossless(diff, float(np.max(np.abs(expected), initial=0.0))):
        raise RuntimeError(
            f"the exported ONNX model differs from PyTorch by {diff:.3g}; the exporter "
            f"mistranslated the model (try the other exporter)"
        )
    return diff


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and warnings; the CLI's output is ours."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
