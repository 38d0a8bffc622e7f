"""Module versions of a state dict: what ``_load_from_state_dict`` reads to upgrade old layouts.

``nn.Module.state_dict()`` returns an ``OrderedDict`` whose ``_metadata`` attribute maps every
module's prefix (``""`` for the root, ``"layer1.0.bn1"``, ...) to ``{"version": cls._version}``.
A checkpoint keeps the state dict as a plain dict of tensors (it must load with
``weights_only=True``), which drops that attribute. Most modules do not care, but some do:
torchvision's MNASNet refuses to load without its version ("version should be set to 1 or 2
instead of None"), and BatchNorm takes a missing version for its oldest layout. So the versions
are saved beside the state dict as plain data (prefix -> int) and put back before loading.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from train.errors import BadInput

KEY = "state_dict_versions"  # the checkpoint entry


def module_versions(state_dict: Mapping[str, Tensor]) -> dict[str, int]:
    """prefix -> version of every module a ``state_dict()`` came from (``{}`` for a plain dict)."""
    meta = getattr(state_dict, "_metadata", None) or {}
    return {
        prefix: entry["version"]
        for prefix, entry in meta.items()
        if isinstance(entry, dict) and isinstance(entry.get("version"), int)
    }


def versioned(state: Mapping[str, Tensor], versions: Any, model: nn.Module) -> OrderedDict:
    """``state`` as ``load_state_dict`` wants it: with the module versions saved beside it, or,
    for a checkpoint written before they were saved (``versions`` None), with ``model``'s own
    (the model is rebuilt from the code that wrote the checkpoint)."""
    if versions is None:
        versions = module_versions(model.state_dict())
    elif not isinstance(versions, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
        for k, v in versions.items()
    ):
        raise BadInput(
            f"checkpoint entry {KEY}: expected a mapping of module names to integer versions; "
            f"is the checkpoint corrupt?"
        )
    out = OrderedDict(state)
    out._metadata = OrderedDict((prefix, {"version": v}) for prefix, v in versions.items())  # type: ignore[attr-defined]
    return out
