"""Channel groups: which output channels Chase may prune together, and every tensor they touch.

Groups are *data*. ``chase_deploy.graph.analysis`` derives them from the model's graph (the same
channel analysis ``slim`` runs on the ONNX export) and hands them to the trainer; nothing here
needs ONNX. One group is one channel index space of ``width`` channels, with three kinds of
members, each a module (or, for ``kind="tensor"``, a parameter/buffer) of the model:

- **producers** write the channels: the output rows of a Conv/ConvTranspose/Linear weight and its
  bias. A group has several when an op couples them: every conv summed into one residual stream
  (``kind="stream"``), or a squeeze-excitation gate multiplied into the channels it gates. A
  producer may write each channel at several rows (its map's ``outer``/``inner``): a gate over a
  Ghost module's concatenation [primary, cheap(primary)] writes channel c in rows c and C + c.
- **carriers** pass the channels through and shrink with them: norm layers (weight, bias, running
  statistics), depthwise convs (filter rows and bias; ``groups`` is lowered), per-channel tensors
  such as a layer scale.
- **consumers** read the channels: the input columns of a Conv/ConvTranspose/Linear weight.

Where a member sees the channels is a ``ChannelMap``: channel ``c`` sits at positions
``o·total·inner + (offset + c)·inner + i`` of its axis (``o < outer``, ``i < inner``). The plain
case is ``c`` itself; ``offset``/``total`` place the group inside a concatenation, ``inner`` is a
Flatten's H·W block (or a depthwise conv's channel multiplier), ``outer`` a channels-last flatten.

A grouped (non-depthwise) conv among the members splits the channels into ``segments`` equal
slices (one per conv group); pruning must take the same number of channels from every slice, so
the conv keeps its ``groups``. All indices are the ORIGINAL (unpruned) ones, as in the channel plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

ROLES = ("producer", "carrier", "consumer")
KINDS = ("layer", "conv", "conv_transpose", "linear", "depthwise", "norm", "tensor")


@dataclass(frozen=True)
class ChannelMap:
    """Positions of a group's channels along one axis of a member (see the module docstring)."""

    offset: int = 0
    total: int = 0  # channels along the axis over all groups; 0 means the group's own width
    inner: int = 1
    outer: int = 1

    def size(self, width: int) -> int:
        """Length of the member's axis."""
        return self.outer * (self.total or width) * self.inner

    def positions(self, channels: Tensor, width: int) -> Tensor:
        """Positions (1-D long tensor) of ``channels`` (1-D long tensor of channel indices)."""
        total = self.total or width
        c = channels.to(torch.long).view(1, -1, 1)
        dev = c.device
        outer = torch.arange(self.outer, device=dev).view(-1, 1, 1) * (total * self.inner)
        inner = torch.arange(self.inner, device=dev).view(1, 1, -1)
        return (outer + (self.offset + c) * self.inner + inner).reshape(-1)

    def spread(self, keep: Tensor) -> Tensor:
        """A bool per position of the member's axis from a group's bool keep vector: False
        where a dropped channel sits (a producer that writes each channel twice drops both)."""
        width = keep.numel()
        line = torch.ones(self.size(width), dtype=torch.bool, device=keep.device)
        line[self.positions((~keep).nonzero().squeeze(1), width)] = False
        return line

    @classmethod
    def fit(
        cls, positions: np.ndarray, channels: np.ndarray, size: int, width: int
    ) -> ChannelMap | None:
        """The inverse of ``positions``: the map that places exactly these (position, channel)
        pairs on an axis of length ``size`` for a group of ``width`` channels, or None."""
        if len(positions) == 0 or set(np.unique(channels).tolist()) != set(range(width)):
            return None
        first = np.sort(positions[channels == 0])
        inner = 1
        while inner < len(first) and first[inner] == first[0] + inner:
            inner += 1
        if len(first) % inner:
            return None
        outer = len(first) // inner
        if first[0] % inner or size % (outer * inner):
            return None
        offset = int(first[0]) // inner
        total = size // (outer * inner)
        cmap = cls(offset, 0 if (total == width and offset == 0) else total, inner, outer)
        expected = cmap.positions(torch.arange(width), width).numpy().reshape(outer, width, inner)
        expected_channels = np.broadcast_to(np.arange(width)[None, :, None], expected.shape)
        want = np.sort(
            expected.reshape(-1).astype(np.int64) * (width + 1) + expected_channels.reshape(-1)
        )
        have = np.sort(positions.astype(np.int64) * (width + 1) + channels.astype(np.int64))
        if want.shape != have.shape or not np.array_equal(want, have):
            return None
        return cmap

    @property
    def is_plain(self) -> bool:
        return self.offset == 0 and self.total == 0 and self.inner == 1 and self.outer == 1

    def to_dict(self) -> dict[str, int]:
        return {
            "offset": self.offset,
            "total": self.total,
            "inner": self.inner,
            "outer": self.outer,
        }

    @classmethod
    def from_dict(cls, raw: Any) -> ChannelMap:
        fields = {k: _int(raw, k, lo=1 if k in ("inner", "outer") else 0) for k in _MAP_KEYS}
        return cls(**fields)


PLAIN = ChannelMap()


@dataclass(frozen=True)
class Member:
    """One module (or tensor) a group's channels touch, and how."""

    name: str  # module name; for kind "tensor" the parameter/buffer name
    role: str  # producer | carrier | consumer
    kind: (
        str  # layer (any Conv/Linear) | conv | conv_transpose | linear | depthwise | norm | tensor
    )
    map: ChannelMap = PLAIN
    axis: int = 0  # kind "tensor": the axis holding the channels
    segments: int = 1  # a grouped conv's groups on this side (1: plain)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"member {self.name!r}: unknown role {self.role!r}")
        if self.kind not in KINDS:
            raise ValueError(f"member {self.name!r}: unknown kind {self.kind!r}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "role": self.role, "kind": self.kind}
        if not self.map.is_plain:
            out["map"] = self.map.to_dict()
        if self.kind == "tensor":
            out["axis"] = self.axis
        if self.segments > 1:
            out["segments"] = self.segments
        return out

    @classmethod
    def from_dict(cls, raw: Any) -> Member:
        _mapping(raw, "member")
        return cls(
            name=_str(raw, "name"),
            role=_str(raw, "role"),
            kind=_str(raw, "kind"),
            map=ChannelMap.from_dict(raw["map"]) if "map" in raw else PLAIN,
            axis=_int(raw, "axis", default=0),
            segments=_int(raw, "segments", default=1, lo=1),
        )


@dataclass(frozen=True)
class ChannelGroup:
    """Output channels that are pruned together, with everything that must shrink with them.

    ``producers``/``consumers`` name the Conv/Linear modules (the short form the controller's
    scores and the channel plan use); ``members`` holds every producer, carrier and consumer with
    its ``ChannelMap``. A group built from names only (``members`` empty) gets plain members:
    producer rows, consumer columns, no carriers.
    """

    name: str
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    width: int
    kind: str = "block"  # "block" (inside a block) or "stream" (a residual stream)
    members: tuple[Member, ...] = ()
    segments: int = 1  # equal channel counts in each of this many slices (grouped convs)

    def __post_init__(self) -> None:
        if not self.producers:
            raise ValueError(f"channel group {self.name!r} has no producer")
        if self.kind not in ("block", "stream"):
            raise ValueError(f"channel group {self.name!r}: unknown kind {self.kind!r}")
        if self.segments < 1 or self.width % self.segments:
            raise ValueError(
                f"channel group {self.name!r}: {self.segments} segments do not divide {self.width}"
            )
        if not self.members:
            plain = tuple(Member(n, "producer", "layer") for n in self.producers) + tuple(
                Member(n, "consumer", "layer") for n in self.consumers
            )
            object.__setattr__(self, "members", plain)
        names = {r: tuple(m.name for m in self.members if m.role == r) for r in ROLES}
        if names["producer"] != tuple(self.producers) or set(names["consumer"]) != set(
            self.consumers
        ):
            raise ValueError(f"channel group {self.name!r}: members disagree with the names")

    def role(self, role: str) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.role == role)

    @property
    def carriers(self) -> tuple[Member, ...]:
        return self.role("carrier")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "width": self.width,
            "segments": self.segments,
            "producers": list(self.producers),
            "carriers": [m.name for m in self.carriers],
            "consumers": list(self.consumers),
            "members": [m.to_dict() for m in self.members],
        }

    @classmethod
    def from_dict(cls, raw: Any) -> ChannelGroup:
        """The group ``to_dict`` wrote (its ``carriers`` list is read from the members)."""
        _mapping(raw, "channel group")
        members = tuple(Member.from_dict(m) for m in _list(raw, "members"))
        return cls(
            name=_str(raw, "name"),
            producers=tuple(_str_list(raw, "producers")),
            consumers=tuple(_str_list(raw, "consumers")),
            width=_int(raw, "width", lo=1),
            kind=_str(raw, "kind"),
            members=members,
            segments=_int(raw, "segments", default=1, lo=1),
        )


@dataclass(frozen=True)
class ModelGroups:
    """What the channel analysis found in one model.

    ``groups`` are the prunable groups (with ``prune_skip`` the residual streams among them);
    ``excluded`` maps every other Conv/Linear layer to why its output channels stay whole.
    """

    groups: tuple[ChannelGroup, ...]
    excluded: dict[str, str] = field(default_factory=dict)
    prune_skip: bool = False
    input_shape: tuple[int, ...] = ()

    def __iter__(self):
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> ChannelGroup:
        return self.groups[i]

    def to_dict(self) -> dict[str, Any]:
        return {
            "prune_skip": self.prune_skip,
            "input_shape": list(self.input_shape),
            "groups": [g.to_dict() for g in self.groups],
            "excluded": dict(self.excluded),
        }

    @classmethod
    def from_dict(cls, raw: Any) -> ModelGroups:
        """The groups ``to_dict`` wrote (``channel_groups.json``, a checkpoint's
        ``channel_groups``); malformed data raises ``ValueError`` naming the field."""
        _mapping(raw, "channel groups")
        excluded = raw.get("excluded", {})
        if not isinstance(excluded, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in excluded.items()
        ):
            raise ValueError("channel groups: `excluded` must map layer names to reasons")
        prune_skip = raw.get("prune_skip", False)
        if not isinstance(prune_skip, bool):
            raise ValueError("channel groups: `prune_skip` must be true or false")
        shape = _list(raw, "input_shape", default=[])
        if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
            raise ValueError("channel groups: `input_shape` must list positive integers")
        groups = tuple(ChannelGroup.from_dict(g) for g in _list(raw, "groups"))
        return cls(groups, dict(excluded), prune_skip, tuple(shape))


_MAP_KEYS = ("offset", "total", "inner", "outer")
_MISSING = object()


def _mapping(raw: Any, what: str) -> None:
    if not isinstance(raw, dict):
        raise ValueError(f"{what}: expected a mapping, got {type(raw).__name__}")


def _int(raw: Any, key: str, *, default: Any = _MISSING, lo: int = 0) -> int:
    _mapping(raw, "channel map" if key in _MAP_KEYS else "channel group")
    value = raw.get(key, default)
    if value is _MISSING:
        raise ValueError(f"channel groups: `{key}` is missing")
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise ValueError(f"channel groups: `{key}` must be an integer >= {lo}, got {value!r}")
    return value


def _str(raw: dict, key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"channel groups: `{key}` must be a non-empty string, got {value!r}")
    return value


def _list(raw: dict, key: str, default: Any = _MISSING) -> list:
    value = raw.get(key, default)
    if value is _MISSING:
        raise ValueError(f"channel groups: `{key}` is missing")
    if not isinstance(value, list):
        raise ValueError(f"channel groups: `{key}` must be a list, got {type(value).__name__}")
    return value


def _str_list(raw: dict, key: str) -> list[str]:
    value = _list(raw, key)
    if not all(isinstance(v, str) for v in value):
        raise ValueError(f"channel groups: `{key}` must list names")
    return value
