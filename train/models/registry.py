"""One registry for every model: ``@register_model`` on a factory, ``create_model`` by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from train.errors import BadInput

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_kwargs(name: str) -> dict[str, inspect.Parameter]:
    """Keyword arguments a model factory accepts (for recipe validation)."""
    factory = _lookup(name)
    return {
        p.name: p
        for p in inspect.signature(factory).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def create_model(name: str, **kwargs) -> nn.Module:
    factory = _lookup(name)
    allowed = model_kwargs(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise BadInput(
            f"model.{unknown[0]}: not an argument of model {name!r}; valid: {', '.join(sorted(allowed))}"
        )
    return factory(**kwargs)


def _lookup(name: str) -> Callable[..., nn.Module]:
    if name not in _MODELS:
        raise BadInput(f"model.name: unknown model {name!r}; valid: {', '.join(list_models())}")
    return _MODELS[name]
