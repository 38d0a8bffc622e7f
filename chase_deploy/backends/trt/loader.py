"""Build TensorRT engines from ONNX, with a JSON sidecar that says where they can run.

An engine only runs on the TensorRT version and GPU model that built it, so ``build`` writes
``ENGINE.json`` beside it (TensorRT version, GPU name and compute capability, precision,
optimization profile, sha256 of the source ONNX; see ``sidecar``) and the runner checks it
before loading.

Precision, one path for TensorRT 10 and 11: the network is strongly typed, so every tensor
runs in the type the ONNX graph gives it, and fp16/bf16 come from converting the ONNX model
first (``precision``: fp16/bf16 inside, fp32 inputs and outputs). TensorRT 10 is asked for
strong typing with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; TensorRT 11 is always
strongly typed (the flag is deprecated there and not passed). The weakly typed builder flags
(``BuilderFlag.FP16``/``BF16``, deprecated since 10.12, removed in 11) are never used. TF32
stays at TensorRT's default (on) for fp32 layers.

int8: a Q/DQ model from ``quantize --target tensorrt`` builds on the same strongly typed path
with no flag at all; its Q/DQ nodes are the precision (explicit quantization, ``explicit_int8``),
and the sidecar records ``precision: int8``.

Every TensorRT call that reports failure by its return value is checked.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from chase_deploy.backends.trt.explicit_int8 import INT8, explicit_int8
from chase_deploy.backends.trt.logger import trt_logger
from chase_deploy.backends.trt.sidecar import SIDECAR_FORMAT, SIDECAR_VERSION, sidecar_path
from chase_deploy.errors import MissingBackend
from chase_deploy.writable import check_writable_file
from train.errors import BadInput, one_line

DEFAULT_PROFILE = (1, 8, 32)

Profile = tuple[int, int, int]


def require_tensorrt(what: str = "chase-deploy build") -> None:
    """MissingBackend naming each missing piece when TensorRT cannot build here."""
    from chase_deploy.backends.probe import gpu_missing, tensorrt_missing

    missing = [r for r in (tensorrt_missing(), gpu_missing()) if r]
    if missing:
        raise MissingBackend(f"{what} needs TensorRT and an NVIDIA GPU: {'; '.join(missing)}")


def build_engine(
    onnx_path: str | Path,
    out_path: str | Path,
    precision: str = "fp32",
    batch: Profile | None = DEFAULT_PROFILE,
    workspace_mib: int = 1024,
    timing_cache: str | Path | None = None,
) -> Path:
    """Build ``onnx_path`` into ``out_path`` (+ ``out_path.json``); both written atomically.

    ``batch`` is the (min, opt, max) profile of the batch axis; None takes the model's fixed
    batch, or the default profile for a dynamic one.
    """
    from train.atomic import atomic_path
    from train.config import PRECISIONS

    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if precision not in PRECISIONS:
        raise BadInput(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if workspace_mib <= 0:
        raise BadInput(f"--workspace-mib {workspace_mib}: give a positive number of MiB")
    model = _load_onnx(onnx_path)
    explicit_int8(onnx_path, model, precision)  # refuses what TensorRT cannot build, up front
    inputs = _static_inputs(onnx_path, model)
    profile = _resolve_profile(onnx_path, inputs, batch)
    check_writable_file(out_path, "--out")
    check_writable_file(sidecar_path(out_path), "--out")
    if timing_cache is not None:
        check_writable_file(Path(timing_cache), "--timing-cache")
    require_tensorrt()
    plan, info = build_plan(model, onnx_path, precision, [profile], workspace_mib, timing_cache)
    sidecar = {**info, "source": {"path": str(onnx_path), "sha256": _sha256(onnx_path)}}
    with atomic_path(out_path) as tmp_engine, atomic_path(sidecar_path(out_path)) as tmp_side:
        tmp_engine.write_bytes(plan)
        tmp_side.write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    return out_path


def build_plan(
    model,
    onnx_path: Path,
    precision: str,
    profiles: Sequence[Profile],
    workspace_mib: int = 1024,
    timing_cache: str | Path | None = None,
) -> tuple[bytes, dict]:
    """Parse and build in memory; returns the serialized engine and its sidecar description.

    An int8 Q/DQ model (``quantize --target tensorrt``) is parsed as it is: the strongly typed
    network runs its Q/DQ layers in int8 (explicit quantization, ``explicit_int8``).
    """
    import tensorrt as trt

    from chase_deploy.backends.trt.precision import convert_precision
    from chase_deploy.environment import current_gpu

    int8 = explicit_int8(onnx_path, model, precision)
    model = model if int8 else convert_precision(model, precision)
    logger = trt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString(), str(onnx_path)):
        raise BadInput(
            f"TensorRT {trt.__version__} cannot parse {onnx_path}: {_parser_errors(parser, model)}"
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    inputs = _static_inputs(onnx_path, model)
    if any(spec.fixed_batch is None for spec in inputs):
        for lo, opt, hi in profiles:
            profile = builder.create_optimization_profile()
            for spec in inputs:
                profile.set_shape(
                    spec.name, spec.at_batch(lo), spec.at_batch(opt), spec.at_batch(hi)
                )
            if config.add_optimization_profile(profile) < 0:
                raise BadInput(
                    f"TensorRT {trt.__version__} refused the optimization profile batch "
                    f"{lo}:{opt}:{hi} for {onnx_path}: {logger.last_error() or 'invalid profile'}"
                )
    cache = _attach_timing_cache(config, timing_cache)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BadInput(
            f"TensorRT {trt.__version__} failed to build {onnx_path}: "
            f"{logger.last_error() or 'see the TensorRT log above'}"
        )
    if timing_cache is not None and cache is not None:
        from train.atomic import write_bytes

        write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    gpu = current_gpu()
    info = {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "tensorrt": trt.__version__,
        "gpu": {"name": gpu.name, "compute_capability": gpu.compute_capability} if gpu else None,
        "precision": INT8 if int8 else precision,
        "strongly_typed": True,
        "tf32": True,  # TensorRT's default for fp32 layers; not disabled here
        "workspace_mib": workspace_mib,
        "profiles": [
            {
                "input": s.name,
                "min": list(s.at_batch(lo)),
                "opt": list(s.at_batch(opt)),
                "max": list(s.at_batch(hi)),
            }
            for lo, opt, hi in profiles
            for s in inputs
        ],
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if int8:
        info["int8"] = int8
    return bytes(plan), info


def network_flags(trt) -> int:
    """``create_network`` flags for a strongly typed network on TensorRT 10 and 11.

    TensorRT 10 needs ``STRONGLY_TYPED`` asked for; TensorRT 11 is always strongly typed and
    deprecates the flag, so nothing is passed there.
    """
    major = int(str(trt.__version__).split(".")[0])
    if major >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _attach_timing_cache(config, timing_cache: str | Path | None):
    """Load (or start) the timing cache so repeated builds reuse kernel timings."""
    if timing_cache is None:
        return None
    path = Path(timing_cache)
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise BadInput(
            f"--timing-cache {path} was made by another TensorRT version or GPU: delete it or give another path"
        )
    return cache


def _parser_errors(parser, model) -> str:
    """Every parser error with the ONNX node it is about (name and operator)."""
    nodes = model.graph.node
    messages = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        index = err.node()
        name = _call(err, "node_name") or (nodes[index].name if 0 <= index < len(nodes) else "")
        op = _call(err, "node_operator") or (
            nodes[index].op_type if 0 <= index < len(nodes) else ""
        )
        where = f"node {name!r} ({op})" if name or op else "graph"
        messages.append(f"{where}: {' '.join(str(err.desc()).split())}")
    return "; ".join(messages) or "unknown parser error"


def _call(obj, method: str) -> str:
    fn = getattr(obj, method, None)
    try:
        return str(fn()) if fn else ""
    except Exception:
        return ""


def _load_onnx(path: Path):
    import onnx

    from chase_deploy.backends.modelfile import inspect_model_file

    model_file = inspect_model_file(path)
    if model_file.kind != "onnx":
        raise BadInput(
            f"{path} is not an ONNX model ({model_file.why_not_onnx or 'it is an engine'})"
        )
    try:
        return onnx.load(str(path))
    except Exception as e:
        raise BadInput(f"cannot read ONNX model {path}: {one_line(e)}") from e


def _static_inputs(path: Path, model):
    from chase_deploy.backends.base import check_batches
    from chase_deploy.backends.modelfile import onnx_inputs

    inputs = onnx_inputs(model)
    if not inputs:
        raise BadInput(f"{path} has no graph inputs to build a profile for")
    check_batches(path, inputs, [])
    return inputs


def _resolve_profile(path: Path, inputs, batch: Profile | None) -> Profile:
    """The profile to build: the requested one for a dynamic batch axis, else the fixed batch.

    A fixed-batch model accepts no profile but its own; the ``DEFAULT_PROFILE`` object itself
    (the API default, compared by identity) counts as "none given".
    """
    if batch is not None:
        if len(batch) != 3 or not all(isinstance(b, int) and b > 0 for b in batch):
            raise BadInput(f"batch profile {batch!r}: give (min, opt, max) positive integers")
        if not batch[0] <= batch[1] <= batch[2]:
            raise BadInput(f"batch profile {tuple(batch)}: need min <= opt <= max")
    fixed = {spec.fixed_batch for spec in inputs}
    if None in fixed:
        return tuple(batch) if batch is not None else DEFAULT_PROFILE  # type: ignore[return-value]
    if len(fixed) > 1:
        raise BadInput(f"{path}: inputs disagree on the batch size ({sorted(fixed)})")
    size = fixed.pop()
    if batch is not None and batch is not DEFAULT_PROFILE and tuple(batch) != (size, size, size):
        raise BadInput(
            f"{path} has a fixed batch size of {size}: use --batch {size} or export with a dynamic batch axis"
        )
    return size, size, size


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
