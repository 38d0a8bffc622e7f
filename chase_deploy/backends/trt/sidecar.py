"""The JSON sidecar ``ENGINE.json`` that ``build`` writes beside every engine, and its checks.

An engine only runs on the TensorRT version and the GPU model that built it. The sidecar records
both (with precision, profiles and the source ONNX's sha256); the runner reads it and refuses an
engine built elsewhere with a message that says to rebuild, instead of TensorRT's own failure.
It also tells our engines from arbitrary files (``backends.modelfile``).
"""

from __future__ import annotations

import json
from pathlib import Path

from chase_deploy.errors import MissingBackend
from train.errors import BadInput

SIDECAR_FORMAT = "chase-deploy-engine"
SIDECAR_VERSION = 1
SIDECAR_SUFFIX = ".json"


def sidecar_path(engine: str | Path) -> Path:
    """Where an engine's build description lives: ``ENGINE.json`` beside it."""
    engine = Path(engine)
    return engine.with_name(engine.name + SIDECAR_SUFFIX)


def read_sidecar(engine: str | Path) -> dict | None:
    """The engine's sidecar as written by ``build``, or None when there is none."""
    side = sidecar_path(engine)
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BadInput(f"engine sidecar {side} is not valid JSON ({e}): rebuild the engine") from e
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        return None
    return data


def check_engine_compatible(
    sidecar: dict, engine_path: str | Path, trt_version: str | None = None, gpu=None
) -> None:
    """BadInput when the engine was built by another TensorRT version or for another GPU.

    ``trt_version`` and ``gpu`` default to this machine's (``tensorrt.__version__``, device 0).
    """
    from chase_deploy.environment import current_gpu, tensorrt_version

    trt_version = trt_version if trt_version is not None else tensorrt_version()
    gpu = gpu if gpu is not None else current_gpu()
    built_trt = sidecar.get("tensorrt")
    built_gpu = sidecar.get("gpu") or {}
    if trt_version is None:
        raise MissingBackend(
            f"engine {engine_path} needs TensorRT {built_trt}, which is not installed here"
        )
    if built_trt != trt_version:
        raise BadInput(
            f"engine {engine_path} was built with TensorRT {built_trt}, this machine has "
            f"TensorRT {trt_version}: rebuild it here with `chase-deploy build`"
        )
    if gpu is None:
        raise MissingBackend(
            f"engine {engine_path} needs a GPU ({built_gpu.get('name')}); this machine has none"
        )
    if (built_gpu.get("name"), built_gpu.get("compute_capability")) != (
        gpu.name,
        gpu.compute_capability,
    ):
        raise BadInput(
            f"engine {engine_path} was built for {built_gpu.get('name')} (compute capability "
            f"{built_gpu.get('compute_capability')}), this GPU is {gpu.name} ({gpu.compute_capability}): "
            f"rebuild it here with `chase-deploy build`"
        )
