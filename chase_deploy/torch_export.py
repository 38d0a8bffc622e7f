"""PyTorch models as ``.pt2`` files: ``torch.export`` programs that load without the model's source.

``slim`` writes ``dense.pt2`` (the masked dense model) and ``slim.pt2`` (the model with the pruned
channels physically removed) beside the ONNX files; the ``torch-cpu``/``torch-cuda`` backends of
``bench`` run them. A ``.pt2`` is a ``torch.export.save`` archive: the graph as JSON (ATen ops
only) and the weights as raw tensor bytes. The model object is never pickled, and the example
inputs, which ``torch.export.save`` would pickle, are dropped before saving; ``load_pt2`` needs
neither the model's class nor its module.

Every program is checked before it is written: it is serialized, loaded back from those bytes and
run against a reference module (the masked dense model) on random inputs of several batch sizes,
with the lossless tolerance of ``verify`` (``max_abs_diff <= 1e-4 * max(1, max|reference|)``).

The batch axis is dynamic (1 .. ``MAX_BATCH``); everything else keeps the export's shape.
"""

from __future__ import annotations

import copy
import hashlib
import io
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from chase_deploy.verify import Verification, is_lossless
from train.errors import BadInput, one_line
from train.groups import ChannelGroup
from train.plan import ChannelPlan

PT2_SUFFIX = ".pt2"
MAX_BATCH = 1 << 16
VERIFY_BATCHES = (1, 3, 2)


@dataclass
class Pt2Program:
    """A serialized, verified program, ready to be written."""

    data: bytes
    verification: Verification
    export_s: float

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def report(self, path: str | Path | None) -> dict:
        """The ``slim_report.json`` entry for this program written at ``path``."""
        check = self.verification
        return {
            "path": None if path is None else str(path),
            "sha256": self.sha256,
            "bytes": len(self.data),
            "lossless": check.lossless,
            "max_abs_diff": check.max_abs_diff,
            "max_abs_reference": check.max_abs_reference,
            "verified_batch_sizes": check.batch_sizes,
            "reference": "the masked dense PyTorch model",
        }


def physically_slim(
    model: nn.Module, plan: ChannelPlan, groups: Sequence[ChannelGroup]
) -> nn.Module:
    """``model`` (changed in place and returned) with the output channels ``plan`` prunes
    physically removed: the one place a physically smaller PyTorch model is made for ``slim.pt2``
    and the GPU check (``tests/gpu/prepare.py``).

    ``groups`` are the channel groups training used (``saved_groups.checkpoint_groups``: saved
    in the checkpoint, or traced with the recipe's ``prune_skip``); ``train.slicing.slice_model``
    rebuilds every member: producer rows and biases, norms, depthwise filters (``groups``
    lowered), consumer columns (grouped, flattened or concatenated ones through their channel
    maps). ``plan`` is the plan after ``--round-to``, so the kept channels are the ONNX model's.
    A pruned layer no group holds is a ``ValueError`` naming it.
    """
    from train.slicing import slice_model

    pruned = {key for key, entry in plan.layers.items() if entry.pruned}
    groups = list(groups)
    covered = {p for g in groups for p in g.producers}
    if pruned <= covered:
        slice_model(model, groups, plan)
        return model
    missing = sorted(pruned - covered)
    raise ValueError(
        f"plan layer {missing[0]!r} is in no channel group the PyTorch slicer can cut "
        f"(`chase-deploy inspect` on the checkpoint lists the groups and why layers are excluded)"
    )


def export_program(model: nn.Module, input_shape: Sequence[int]) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` (eval mode) for inputs ``input_shape`` (N, C, H, W, ...),
    with a dynamic batch axis and no example inputs kept."""
    model = model.eval()
    shape = (max(2, int(input_shape[0])), *map(int, input_shape[1:]))  # 1 would specialize
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        with torch.no_grad():
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    except Exception as e:
        raise BadInput(
            f"torch.export cannot export {type(model).__name__} for input {list(shape)}: "
            f"{one_line(e)}"
        ) from e
    program.example_inputs = None  # torch.export.save would pickle them
    return program


def serialize(program: torch.export.ExportedProgram) -> bytes:
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def load_pt2(source: str | Path | bytes) -> torch.export.ExportedProgram:
    """Load a ``.pt2`` program (a path or its bytes); BadInput with the cause if it is not one."""
    name = "the .pt2 bytes" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes):
        path = Path(source)
        if not path.is_file():
            raise BadInput(f"{path}: no such .pt2 file")
        source = path.read_bytes()
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # torch logs a traceback before raising its own error
    try:
        return torch.export.load(io.BytesIO(source))
    except Exception as e:
        raise BadInput(
            f"{name} is not a torch.export program (.pt2) this torch {torch.__version__} can "
            f"load: {one_line(e)}"
        ) from e
    finally:
        logger.setLevel(level)


def verified_program(
    model: nn.Module,
    input_shape: Sequence[int],
    reference: nn.Module | None = None,
    batches: Sequence[int] = VERIFY_BATCHES,
) -> Pt2Program:
    """Export ``model``, serialize it, load it back and compare it with ``reference`` (default:
    ``model`` itself) on random batches; BadInput, nothing written, when it is not lossless."""
    start = time.perf_counter()
    data = serialize(export_program(model, input_shape))
    export_s = time.perf_counter() - start
    loaded = load_pt2(data).module()
    check = compare_modules(
        reference if reference is not None else model, loaded, input_shape, batches
    )
    if not check.lossless:
        raise BadInput(
            f"the exported .pt2 program differs from the reference model by "
            f"{check.max_abs_diff:.3g} (max |reference| {check.max_abs_reference:.3g}); "
            f"nothing written"
        )
    return Pt2Program(data, check, export_s)


def dense_program(masked: nn.Module, input_shape: Sequence[int]) -> Pt2Program:
    """``dense.pt2``: the masked dense model, verified against itself after the round trip."""
    return verified_program(masked, input_shape)


def slim_program(sliced: nn.Module, reference: nn.Module, input_shape: Sequence[int]) -> Pt2Program:
    """``slim.pt2``: a physically sliced model, verified equal to the masked dense ``reference``."""
    return verified_program(sliced, input_shape, reference=reference)


def slim_from_plan(
    masked: nn.Module,
    plan: ChannelPlan,
    input_shape: Sequence[int],
    groups: Sequence[ChannelGroup],
) -> tuple[Pt2Program | None, str]:
    """``slim.pt2`` from the masked model and its (rounded) plan through ``physically_slim``;
    (None, why) when the PyTorch slicer cannot cut a layer the ONNX surgery removed."""
    try:
        sliced = physically_slim(copy.deepcopy(masked), plan, groups)
    except ValueError as e:
        return None, f"slim.pt2 not written: {e}"
    return slim_program(sliced, masked, input_shape), ""


def compare_modules(
    reference: nn.Module,
    candidate,
    input_shape: Sequence[int],
    batches: Sequence[int] = VERIFY_BATCHES,
    seed: int = 0,
) -> Verification:
    """Largest output difference of two callables on the same random fp32 batches (CPU)."""
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    worst, scale = 0.0, 0.0
    with torch.no_grad():
        for batch in batches:
            x = torch.randn((batch, *map(int, input_shape[1:])), generator=generator)
            expected = _first_output(reference(x)).double()
            actual = _first_output(candidate(x)).double()
            if expected.shape != actual.shape:
                return Verification(
                    float("inf"), scale, False, list(batches), time.perf_counter() - start
                )
            both_nan = torch.isnan(expected) & torch.isnan(actual)
            if not torch.equal(torch.isnan(expected), torch.isnan(actual)):
                worst = float("inf")
            diff = (expected - actual).abs().masked_fill(both_nan, 0.0)
            worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
            scale = max(
                scale, float(expected.abs().nan_to_num(0.0).max()) if expected.numel() else 0.0
            )
    return Verification(
        worst, scale, is_lossless(worst, scale), list(batches), time.perf_counter() - start
    )


def program_inputs(program: torch.export.ExportedProgram) -> list[tuple[str, tuple, np.dtype, int]]:
    """(name, shape with None for a dynamic axis, numpy dtype, largest batch) per user input."""
    user = set(program.graph_signature.user_inputs)
    found = []
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user:
            continue
        value = node.meta.get("val")
        if not isinstance(value, torch.Tensor):
            raise BadInput(f"the program's input {node.name!r} is not a tensor")
        dims, largest = [], MAX_BATCH
        for i, d in enumerate(value.shape):
            if isinstance(d, int):
                dims.append(int(d))
                continue
            dims.append(None)
            if i == 0:
                bounds = program.range_constraints.get(d.node.expr)
                if bounds is not None and bounds.upper.is_finite:
                    largest = int(bounds.upper)
        try:
            dtype = np.dtype(str(value.dtype).removeprefix("torch."))
        except TypeError:
            raise BadInput(f"the program's input {node.name!r} has dtype {value.dtype}") from None
        found.append((node.name, tuple(dims), dtype, largest))
    return found


def _first_output(out) -> torch.Tensor:
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out
