"""The ONNX channel engine: follow kept channels through a graph, remove them, count the cost.

- ``reading``: loading a model file, shapes, constants, which layer a plan key names.
- ``tracks``: what the walk carries (``Track``) and records (``SliceEdit``, ``ValueEdit``,
  ``AttrEdit``, couplings, in a ``Flow``).
- ``state``: one walk's state; ``stops``: where it stops and what it says.
- ``registry`` and ``rules``: one rule per op type (``pointwise``, ``reshaping``, ``layers``).
- ``walk``: the walk that drives the rules.
- ``surgery``: a plan applied to the graph (``slim_model``).
- ``analysis``, ``matching``, ``members``, ``policy``: the prunable channel groups of a model.
- ``flops``, ``layer_table``: FLOPs, parameters and the per-layer table.

``docs/channel-engine.md`` walks through it, with an example of adding an op.
"""
