"""One registry for the built-in models: ``@register_model`` on a factory. ``create_model`` (in
``train.models.sources``) builds any ``model.name`` form, registry names included."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def registry_factory(name: str) -> Callable[..., nn.Module] | None:
    return _MODELS.get(name)
