"""Weights from a local file: ``model.weights`` (where training starts) and the distillation teacher.

A file is a chase-deploy run directory or checkpoint (its ``state_dict``, masks applied), a state
dict saved with ``torch.save`` (.pt/.pth, read with ``weights_only=True``; a ``{"state_dict": ...}``
wrapper is unwrapped) or a .safetensors file. Keys and shapes must match the model exactly;
``ignore`` globs leave the matching keys at their initial values (a new classifier for a new
dataset). Any other mismatch is refused in one line naming the first mismatches. The file's
sha256 is kept, so the run directory and the checkpoint say exactly what a run started from.
"""

from __future__ import annotations

import fnmatch
import hashlib
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from train.checkpoint import FORMAT, load_checkpoint
from train.config import ModelConfig
from train.errors import BadInput
from train.run_dir import RunDir

SHOWN = 3  # mismatches named per kind in a refusal


@dataclass(frozen=True)
class WeightsFile:
    """The tensors of one weights file, and where they came from."""

    given: str  # the path as the recipe gives it
    path: Path  # the file read (a run directory's final.pt), absolute
    sha256: str
    kind: str  # checkpoint | state_dict | safetensors
    state: dict[str, Tensor]
    model: dict | None = None  # a checkpoint's {name, kwargs}
    input_shape: tuple[int, ...] | None = None  # a checkpoint's sample shape

    def record(self) -> dict[str, str]:
        """What the run directory and the checkpoint keep of it."""
        return {"path": str(self.path), "sha256": self.sha256, "format": self.kind}


def read_weights(given: str, key: str) -> WeightsFile:
    """Read the file ``given`` names (``key`` is the recipe key, for messages)."""
    path = resolve_file(given, key)
    digest = sha256_file(path)
    if path.suffix == ".safetensors":
        return WeightsFile(given, path, digest, "safetensors", _read_safetensors(path, key))
    obj = _torch_load(path, key)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        ckpt = load_checkpoint(path)
        state = _masked_state(ckpt["state_dict"], ckpt["masks"])
        shape = ckpt.get("input_shape")
        return WeightsFile(
            given,
            path,
            digest,
            "checkpoint",
            state,
            model={"name": ckpt["model"]["name"], "kwargs": dict(ckpt["model"].get("kwargs", {}))},
            input_shape=tuple(shape) if shape is not None else None,
        )
    return WeightsFile(given, path, digest, "state_dict", _plain_state(obj, path, key))


def resolve_file(given: str, key: str) -> Path:
    """The file to read: ``given`` itself, or a run directory's final.pt."""
    path = Path(given).expanduser()
    if path.is_dir():
        final = RunDir(path).final
        if not final.is_file():
            raise BadInput(
                f"{key}: {given} is a directory without final.pt; name a finished run directory, "
                f"a checkpoint, a state dict (.pt/.pth) or a .safetensors file"
            )
        return final.resolve()
    if not path.is_file():
        raise BadInput(
            f"{key}: {given}: no such file or directory; name a local run directory, checkpoint, "
            f"state dict (.pt/.pth) or .safetensors file (nothing is downloaded)"
        )
    return path.resolve()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_into(
    model: nn.Module, weights: WeightsFile, ignore: Sequence[str], key: str, what: str
) -> list[str]:
    """Copy the file's tensors into ``model``; returns the model's keys left at their initial
    values (matched by ``ignore``). ``what`` names the model in a refusal."""
    target = model.state_dict()
    _check_globs(ignore, set(target) | set(weights.state), weights.given)
    ignored = [k for k in target if _matches(k, ignore)]
    state = {k: v for k, v in weights.state.items() if not _matches(k, ignore)}
    missing = [k for k in target if k not in state and k not in ignored]
    unexpected = [k for k in state if k not in target]
    shapes = [
        f"{k} {tuple(state[k].shape)} in the file, {tuple(target[k].shape)} in the model"
        for k in target
        if k in state and tuple(state[k].shape) != tuple(target[k].shape)
    ]
    if missing or unexpected or shapes:
        found = [
            _some("missing", missing),
            _some("unexpected", unexpected),
            _some("shape", shapes),
        ]
        raise BadInput(
            f"{key}: {weights.given} does not fit {what}: {'; '.join(f for f in found if f)}; fix "
            f"the file or list the keys to keep at their initial values in model.weights_ignore"
        )
    model.load_state_dict(state, strict=False)
    return ignored


def _matches(name: str, globs: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, g) for g in globs)


def _check_globs(globs: Sequence[str], keys: set[str], given: str) -> None:
    for i, glob in enumerate(globs):
        if not any(fnmatch.fnmatchcase(k, glob) for k in keys):
            some = ", ".join(sorted(keys)[-SHOWN:])
            raise BadInput(
                f"model.weights_ignore[{i}]: {glob!r} matches no key of the model or of {given} "
                f"(keys look like {some}); fix the glob"
            )


def _some(kind: str, names: list[str]) -> str:
    if not names:
        return ""
    more = f" (and {len(names) - SHOWN} more)" if len(names) > SHOWN else ""
    return f"{kind} {', '.join(names[:SHOWN])}{more}"


def _torch_load(path: Path, key: str) -> Any:
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # torch.save writes a zip archive since PyTorch 1.6
            raise BadInput(
                f"{key}: {path} is not a torch file (random bytes, text or a legacy pickle); save "
                f"the weights with torch.save(model.state_dict(), ...) or as .safetensors"
            )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = (str(e).strip().splitlines() or ["unpickling refused"])[0]
        raise BadInput(
            f"{key}: {path} holds objects other than tensors and plain data ({first[:120]}); save "
            f"model.state_dict() rather than the model"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BadInput(f"{key}: {path} is not a readable torch file: {first[:120]}") from None


def _read_safetensors(path: Path, key: str) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BadInput(
            f"{key}: {path} is not a readable .safetensors file: {first[:120]}"
        ) from None


def _plain_state(obj: Any, path: Path, key: str) -> dict[str, Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # Lightning and many training scripts wrap the state dict
    if not isinstance(obj, dict) or not obj:
        raise BadInput(
            f"{key}: {path} holds a {type(obj).__name__}, not a state dict (name -> tensor); "
            f"save model.state_dict()"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise BadInput(
            f"{key}: {path} is not a state dict: entry {bad[0]!r} is a "
            f"{type(obj[bad[0]]).__name__}, not a tensor; save model.state_dict()"
        )
    return dict(obj)


def _masked_state(state: dict[str, Tensor], masks: dict[str, Tensor]) -> dict[str, Tensor]:
    """A checkpoint's weights with its masks applied (a trained sparse run's real network)."""
    out = dict(state)
    for name, mask in masks.items():
        if name in out and out[name].shape == mask.shape:
            out[name] = out[name] * mask.to(out[name].dtype)
    return out


def start_from_weights(model: nn.Module, cfg: ModelConfig) -> dict[str, Any]:
    """``model.weights``: load the file into ``model`` (still on the CPU); what the run records."""
    assert cfg.weights is not None
    weights = read_weights(cfg.weights, "model.weights")
    ignored = load_into(model, weights, cfg.weights_ignore, "model.weights", f"model {cfg.name}")
    return {"given": cfg.weights, **weights.record(), "ignored": ignored}
