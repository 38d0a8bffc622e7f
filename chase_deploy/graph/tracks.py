"""What the channel pass carries and what it records.

A ``Track`` says which indices along one axis of a tensor survive. The pass never changes the
graph; it records edits (``SliceEdit``, ``ValueEdit``, ``AttrEdit``) in a ``Flow``, which
``surgery`` applies once everything is known and the group analysis reads as a map of where
every channel goes.

Each kept index carries a *label*: ``source id << SOURCE_BITS | channel``, the layer whose
channel it is (-1 for positions no tracked layer wrote, such as a concatenated input that is not
in the plan).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import onnx_graphsurgeon as gs

SOURCE_BITS = 32
CHANNEL_BITS = (1 << SOURCE_BITS) - 1  # ``label & CHANNEL_BITS`` is the channel


@dataclass(frozen=True)
class Track:
    """Along ``axis`` of a rank-``rank`` tensor of size ``width``, indices ``kept`` survive;
    ``sources`` are the plan layers whose channels these are, ``labels`` (aligned with ``kept``)
    say which channel of which source each kept index carries (-1: not a tracked channel)."""

    axis: int
    rank: int
    width: int
    kept: np.ndarray
    sources: frozenset[str]
    labels: np.ndarray

    def same_channels(self, other: Track) -> bool:
        return self.width == other.width and np.array_equal(self.kept, other.kept)

    def moved(self, axis: int, rank: int) -> Track:
        return Track(axis, rank, self.width, self.kept, self.sources, self.labels)

    @property
    def full(self) -> bool:
        return len(self.kept) == self.width

    def describe(self) -> str:
        return f"{', '.join(sorted(self.sources))} (keeps {len(self.kept)} of {self.width})"


@dataclass
class SliceEdit:
    """Keep ``indices`` along ``axis`` of the constant feeding ``node.inputs[index]``.

    ``labels`` (aligned with ``indices``) say which tracked channel each kept index holds. With
    ``segments`` > 1 the constant is a grouped conv's weight and ``indices`` are positions in
    its *input channels*: each conv group keeps its own columns (the same number in each).
    """

    node: gs.Node
    index: int
    axis: int
    indices: np.ndarray
    labels: np.ndarray | None = None
    segments: int = 1


@dataclass
class ValueEdit:
    """Replace the constant feeding ``node.inputs[index]`` (a shape, sizes or split vector);
    ``index == len(node.inputs)`` appends it."""

    node: gs.Node
    index: int
    values: np.ndarray


class AttrEdit(NamedTuple):
    """Set attribute ``name`` of ``node`` to ``value`` (None: delete it), such as the ``group``
    of a depthwise conv that lost channels."""

    node: gs.Node
    name: str
    value: object


class Coupling(NamedTuple):
    """Node ``node`` (an ``op``) combines the channels of ``sources``: they must keep one set."""

    sources: frozenset[str]
    op: str
    node: str


class Tie(NamedTuple):
    """At node ``node`` the channel labelled ``a[i]`` meets the one labelled ``b[i]`` (the same
    position of two combined tracks): they are one channel of their group
    (``chase_deploy.graph.spaces``)."""

    node: str
    a: np.ndarray
    b: np.ndarray


@dataclass
class Flow:
    """The result of the pass: edits to apply and which plan layers ended up coupled."""

    slices: list[SliceEdit] = field(default_factory=list)
    values: list[ValueEdit] = field(default_factory=list)
    attrs: list[AttrEdit] = field(default_factory=list)
    coupled: list[frozenset[str]] = field(default_factory=list)
    couplings: list[Coupling] = field(default_factory=list)
    ties: list[Tie] = field(default_factory=list)
    segments: dict[str, int] = field(default_factory=dict)  # source -> grouped conv groups (lcm)
    source_ids: dict[str, int] = field(default_factory=dict)


def expand(kept: np.ndarray, width: int, outer: int, inner: int) -> np.ndarray:
    """Indices along an axis laid out as (outer, width, inner) that belong to ``kept`` channels."""
    idx = (
        np.arange(outer)[:, None, None] * (width * inner)
        + kept[None, :, None] * inner
        + np.arange(inner)[None, None, :]
    )
    return idx.reshape(-1).astype(np.int64)


def expand_labels(labels: np.ndarray, outer: int, inner: int) -> np.ndarray:
    """The labels of ``expand``'s indices, in the same order."""
    return np.broadcast_to(labels[None, :, None], (outer, len(labels), inner)).reshape(-1).copy()
