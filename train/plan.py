"""Channel plans: which output channels each producing layer keeps (``docs/file-formats.md``).

Training produces the plan (``plan_from_groups``: the Chase controller's alive channels, written to
``channel_plan.json`` and into every checkpoint) and ``slim`` consumes it, so the one typed
definition lives here, on the producing side; ``chase_deploy`` imports it. A plan is parsed and
checked here once, so the surgery can trust it: keys are strings, every ``kept`` set is sorted,
unique, non-empty and inside ``[0, out_channels)``. Whether a key names a layer of a given graph,
and whether coupled layers agree, is the surgery's business.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from train.errors import BadInput, one_line

if TYPE_CHECKING:
    from torch import Tensor

    from train.groups import ChannelGroup

FORMAT = "chase-channel-plan"
VERSION = 1


@dataclass(frozen=True)
class LayerPlan:
    """The channels one producing layer keeps, out of ``out_channels``."""

    out_channels: int
    kept: tuple[int, ...]

    @property
    def pruned(self) -> bool:
        return len(self.kept) < self.out_channels


@dataclass(frozen=True)
class ChannelPlan:
    """Kept channels per producing layer; layers not listed keep all of theirs."""

    layers: dict[str, LayerPlan]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the contract (``channel_plan.json``, a checkpoint's ``channel_plan``)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "layers": {
                k: {"out_channels": v.out_channels, "kept": list(v.kept)}
                for k, v in self.layers.items()
            },
        }


def empty_plan() -> ChannelPlan:
    """The plan of a run that pruned no channels."""
    return ChannelPlan({})


def plan_from_groups(groups: Sequence[ChannelGroup], alive: Sequence[Tensor]) -> ChannelPlan:
    """Kept indices of every producer of a group that lost channels.

    ``alive`` holds each group's bool keep vector. Every producer of a group (a residual stream
    has several) keeps the same channels, listed in its own rows: a producer whose rows hold
    the group's channels through a map (a gate over a Ghost concatenation writes each channel
    twice) lists its real ``out_channels`` and the rows of the kept channels.
    """
    layers: dict[str, LayerPlan] = {}
    for group, keep in zip(groups, alive, strict=True):
        channels = keep.nonzero().squeeze(1)
        if len(channels) == group.width:
            continue
        for member in group.role("producer"):
            rows = sorted(member.map.positions(channels, group.width).tolist())
            layers[member.name] = LayerPlan(member.map.size(group.width), tuple(rows))
    return ChannelPlan(layers)


def load_plan(path: str | Path) -> ChannelPlan:
    """Read a ``channel_plan.json``; anything unreadable or malformed is ``BadInput``."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"plan {path}: no such file")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(
            f"plan {path}: not JSON ({one_line(e, 160)}); pass a channel_plan.json"
        ) from None
    return parse_plan(obj, source=str(path))


def parse_plan(obj: Any, source: str = "plan") -> ChannelPlan:
    """Check the contract: format, version, and every layer's ``out_channels`` and ``kept``."""
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise BadInput(f'{source}: not a channel plan (expected "format": "{FORMAT}")')
    version = obj.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BadInput(f"{source}: bad channel plan version {version!r}; expected {VERSION}")
    if version > VERSION:
        raise BadInput(
            f"{source}: channel plan version {version} is newer than {VERSION}; upgrade chase-deploy"
        )
    layers = obj.get("layers")
    if not isinstance(layers, dict):
        raise BadInput(f'{source}: "layers" must map layer names to {{out_channels, kept}}')
    return ChannelPlan({str(k): _parse_layer(k, v, source) for k, v in layers.items()})


def _parse_layer(name: str, entry: Any, source: str) -> LayerPlan:
    where = f"{source}: layer {name!r}"
    if not isinstance(entry, dict):
        raise BadInput(f'{where}: expected {{"out_channels": int, "kept": [int, ...]}}')
    out = entry.get("out_channels")
    if not isinstance(out, int) or isinstance(out, bool) or out < 1:
        raise BadInput(f"{where}: out_channels must be a positive integer, got {out!r}")
    kept = entry.get("kept")
    if not isinstance(kept, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in kept
    ):
        raise BadInput(f"{where}: kept must be a list of channel indices")
    if not kept:
        raise BadInput(f"{where}: kept is empty; a layer must keep at least one channel")
    if len(set(kept)) != len(kept):
        dup = sorted({i for i in kept if kept.count(i) > 1})[0]
        raise BadInput(f"{where}: kept lists channel {dup} twice; indices must be unique")
    bad = [i for i in kept if not 0 <= i < out]
    if bad:
        raise BadInput(
            f"{where}: kept index {bad[0]} is out of range [0, {out}) for out_channels {out}"
        )
    if kept != sorted(kept):
        raise BadInput(f"{where}: kept must be sorted ascending")
    return LayerPlan(out, tuple(kept))
