"""How a model declares which output channels Chase may prune, and what reads them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChannelGroup:
    """Output channels that are pruned together, with everything that must shrink with them.

    ``producers`` are Conv/Linear module names whose weight rows (dim 0) are the channels; an
    ordinary group has one producer, a residual stream (``prune_skip``) has every conv summed into
    the stream. ``consumers`` are Conv/Linear modules whose weight columns (dim 1) read the
    channels. All producers of a group share one channel index space of size ``width``. Norm
    layers over the channels need no entry: training leaves them dense, and ``slim`` finds and
    slices them in the exported graph.
    """

    name: str
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    width: int
    kind: str = "block"  # "block" (a conv inside a block) or "stream" (a residual stream)

    def __post_init__(self) -> None:
        if not self.producers:
            raise ValueError(f"channel group {self.name!r} has no producer")
        if self.kind not in ("block", "stream"):
            raise ValueError(f"channel group {self.name!r}: unknown kind {self.kind!r}")
