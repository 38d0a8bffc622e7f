"""The built-in channel rules, one function per op family; importing this package registers
them all (``chase_deploy.graph.registry``)."""

from chase_deploy.graph.rules import layers, pointwise, reshaping

__all__ = ["layers", "pointwise", "reshaping"]
