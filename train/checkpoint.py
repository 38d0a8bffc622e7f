"""Chase checkpoints: plain dicts of tensors and primitives, loaded with ``weights_only=True``."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from train.atomic import torch_save
from train.errors import BadInput, one_line

FORMAT = "chase-checkpoint"
VERSION = 1
REQUIRED = (
    "format",
    "version",
    "model",
    "state_dict",
    "masks",
    "channel_plan",
    "recipe",
    "progress",
)


def save_checkpoint(path: str | Path, ckpt: dict[str, Any]) -> None:
    """Write atomically; ``ckpt`` holds everything of the contract except format and version."""
    torch_save(path, {"format": FORMAT, "version": VERSION, **ckpt})


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate; never unpickles arbitrary objects. Bad files raise ``BadInput``."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"checkpoint {path}: no such file")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # torch.save writes a zip archive since PyTorch 1.6
            raise BadInput(
                f"checkpoint {path}: not a torch checkpoint (random bytes, text or a legacy pickle); "
                f"pass a final.pt or last.pt written by `chase-deploy train`"
            )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise BadInput(
            f"checkpoint {path}: refused to load (it holds objects other than tensors and plain "
            f"data: {one_line(e, 120)}); only chase checkpoints written by `chase-deploy train` load"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise BadInput(
            f"checkpoint {path}: not a readable torch checkpoint (truncated or corrupt?): "
            f"{one_line(e, 120)}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise BadInput(
            f"checkpoint {path}: not a chase checkpoint (a plain state_dict or another tool's file); "
            f"train one with `chase-deploy train RECIPE`"
        )
    version = ckpt.get("version")
    if not isinstance(version, int) or version < 1:
        raise BadInput(f"checkpoint {path}: bad format version {version!r}")
    if version > VERSION:
        raise BadInput(
            f"checkpoint {path}: written by a newer chase-deploy (format version {version} > "
            f"{VERSION}); upgrade chase-deploy to read it"
        )
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise BadInput(
            f"checkpoint {path}: chase checkpoint lacks {', '.join(missing)}; is it truncated?"
        )
    model = ckpt["model"]
    if not isinstance(model, dict) or "name" not in model:
        raise BadInput(f"checkpoint {path}: `model` entry must name the model and its kwargs")
    return ckpt


def build_model_from_checkpoint(
    ckpt: dict[str, Any], *, apply_masks: bool = True
) -> torch.nn.Module:
    """Rebuild the registry model, load the dense-shaped state and zero the masked weights."""
    from train.models import create_model
    from train.state_versions import KEY, versioned

    model = create_model(ckpt["model"]["name"], **ckpt["model"].get("kwargs", {}))
    try:
        model.load_state_dict(versioned(ckpt["state_dict"], ckpt.get(KEY), model))
    except RuntimeError as e:
        raise BadInput(
            f"checkpoint state_dict does not fit model {ckpt['model']['name']}: {one_line(e)}"
        ) from None
    if apply_masks:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, mask in ckpt["masks"].items():
                if name not in params or params[name].shape != mask.shape:
                    raise BadInput(f"checkpoint mask {name!r} does not fit the model's parameters")
                params[name].mul_(mask.to(params[name].dtype))
    return model.eval()
