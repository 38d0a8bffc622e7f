"""The pruning policy: which of the groups the walk can follow Chase may prune.

One rule per check, in order (``inspect`` prints the reason of each exclusion):

- **Residual streams** (channels a residual Add sums) are prunable only with ``prune_skip``,
  jointly across all their producers.
- A group of a **single channel** stays whole.
- A **residual entry**, the input of a residual block that no Add sums (a stem read by both
  branches of a block with a projection shortcut), is kept whole, with or without
  ``prune_skip``, like the stream it enters.
- **The last feature map**, read only by the output layer (the classifier after global
  pooling), is kept whole, so the classifier never changes.
- Everything else is prunable.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from chase_deploy.graph.matching import Layers
from chase_deploy.graph.members import Members
from chase_deploy.graph.rules.pointwise import ADDITIVE
from chase_deploy.graph.tracks import Flow, Track


class Policy:
    """The policy over one probe walk of a graph."""

    def __init__(
        self, graph: gs.Graph, flow: Flow, tracks: dict[str, Track], layers: Layers
    ) -> None:
        self.graph = graph
        self.flow = flow
        self.tracks = tracks
        self.layers = layers
        self.outputs = self._output_layers()

    def exclusion(
        self, producers: list[str], found: Members, prune_skip: bool, width: int
    ) -> str | None:
        """Why the group of ``producers`` (with members ``found``, ``width`` channels) stays
        whole; None: prunable."""
        if self.is_stream(producers):
            if not prune_skip:
                node = self._coupling_node(producers)
                return f"a residual stream (summed {node}); prunable with chase.prune_skip"
            return None
        if width < 2:
            return "has a single output channel"
        entry = self._residual_entry(producers, found)
        if entry is not None:
            return (
                f"the input of a residual block (both branches of node {entry} read it); kept "
                f"whole like the residual streams"
            )
        consumers = {m.name for m in found.values() if m.role == "consumer"}
        if consumers and consumers <= self.outputs and self._rank_of(producers[0]) > 2:
            return (
                f"the last feature map, read only by the output layer "
                f"{', '.join(sorted(consumers))}: kept whole so the classifier never changes"
            )
        return None

    def is_stream(self, producers: list[str]) -> bool:
        """A residual Add (or Sub, Sum) sums these producers' channels."""
        mine = set(producers)
        return any(c.op in ADDITIVE and mine & set(c.sources) for c in self.flow.couplings)

    def _coupling_node(self, producers: list[str]) -> str:
        mine = set(producers)
        nodes = [c.node for c in self.flow.couplings if c.op in ADDITIVE and mine & set(c.sources)]
        return f"at {nodes[0]}" + (f" and {len(nodes) - 1} more" if len(nodes) > 1 else "")

    def _rank_of(self, name: str) -> int:
        shape = self.layers.node_of[name].outputs[0].shape
        return len(shape) if shape is not None else 0

    def _output_layers(self) -> set[str]:
        """Layers whose output reaches a graph output through non-layer ops only."""
        found: set[str] = set()
        seen: set[str] = set()
        todo = list(self.graph.outputs)
        while todo:
            tensor = todo.pop()
            if tensor.name in seen or not tensor.inputs:
                continue
            seen.add(tensor.name)
            node = tensor.inputs[0]
            name = self.layers.layer_of.get(id(node))
            if name is not None:
                found.add(name)
                continue
            todo.extend(t for t in node.inputs if not isinstance(t, gs.Constant))
        return found

    def _residual_entry(self, producers: list[str], found: Members) -> str | None:
        """An Add whose inputs the group's channels reach through different consumers (without
        crossing another Add or coming back into the group): the group forks into both branches
        of a residual block, like a stem feeding a block with a projection shortcut."""
        mine = set(producers)
        region = {name for name, t in self.tracks.items() if t.sources & mine}
        exits = [m.name for m in found.values() if m.role == "consumer" and m.name not in mine]
        reach: dict[int, dict[str, set[int]]] = {}
        nodes: dict[int, gs.Node] = {}
        for name in exits:
            seen: set[str] = set()
            todo = list(self.layers.node_of[name].outputs)
            while todo:
                tensor = todo.pop()
                if tensor.name in seen or tensor.name in region:
                    continue
                seen.add(tensor.name)
                for node in tensor.outputs:
                    live = [t for t in node.inputs if not isinstance(t, gs.Constant)]
                    if node.op in ADDITIVE and len(live) >= 2:
                        reach.setdefault(id(node), {}).setdefault(name, set()).add(
                            node.inputs.index(tensor)
                        )
                        nodes[id(node)] = node
                        continue
                    todo.extend(node.outputs)
        for key, by_exit in reach.items():
            inputs = set().union(*by_exit.values())
            if len(inputs) >= 2 and not any(s == inputs for s in by_exit.values()):
                return nodes[key].name
        return None
