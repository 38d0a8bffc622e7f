"""Where a recipe's model comes from: ``model.name`` in one of four forms (a contract).

- a registry name (``resnet50``, see ``train.models.registry``);
- ``torchvision:NAME``, a ``torchvision.models`` builder;
- ``timm:NAME``, ``timm.create_model(NAME)``;
- ``MODULE:CALLABLE``, an import path; the working directory is importable, as with
  ``python -m`` (``mynets:build``, ``pkg.models:Net``, ``pkg.zoo:Factory.small``).

The other keys under ``model:`` are the factory's keyword arguments, except ``weights`` and
``weights_ignore``: a local file to start from (``train.weights``). Nothing is ever downloaded:
a factory argument that asks for pretrained weights (``pretrained: true``) is refused. Every failure
is a ``BadInput`` naming the cause and what to install or put on the path: a module that cannot
be imported, a missing callable, a factory that raises, an object that is not an ``nn.Module``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from train.errors import BadInput, one_line
from train.models.registry import list_models, registry_factory

# What the data implies, per keyword a factory may accept (filled in unless the recipe sets it).
DATA_KEYS = ("num_classes", "in_channels", "in_chans", "input_size")


@dataclass(frozen=True)
class ModelSource:
    """A resolved ``model.name``: the factory, and which keyword arguments it takes."""

    name: str
    kind: str  # registry | torchvision | timm | import
    factory: Callable[..., Any]
    params: dict[str, inspect.Parameter]
    any_keyword: bool  # the factory takes **kwargs: keys are checked when it runs

    def create(self, **kwargs: Any) -> nn.Module:
        _refuse_pretrained(self.name, self.kind, kwargs)
        unknown = sorted(k for k in kwargs if k not in self.params)
        if unknown and not self.any_keyword:
            valid = ", ".join(sorted(self.params)) or "none"
            raise BadInput(
                f"model.{unknown[0]}: not an argument of model {self.name!r}; valid: {valid}"
            )
        if self.kind == "timm":
            kwargs = {"pretrained": False, **kwargs}
        try:
            model = self.factory(**kwargs)
        except BadInput:
            raise
        except Exception as e:  # noqa: BLE001 - any error in the user's factory is bad input
            raise BadInput(
                f"model.name: {self.name}({_show_kwargs(kwargs)}) raised {type(e).__name__}: "
                f"{one_line(e, 200)}; fix the factory or its arguments under model:"
            ) from None
        if not isinstance(model, nn.Module):
            raise BadInput(
                f"model.name: {self.name} returned a {type(model).__name__}, not a "
                f"torch.nn.Module; point model.name at a function or class that builds the network"
            )
        return model

    def data_kwargs(self, **implied: Any) -> dict[str, Any]:
        """The data-implied arguments (``DATA_KEYS``) this factory takes by name."""
        out = {k: v for k, v in implied.items() if k in self.params}
        if self.kind == "torchvision" and "num_classes" in implied:
            out["num_classes"] = implied["num_classes"]
        if self.kind == "timm":
            out.update({k: implied[k] for k in ("num_classes", "in_chans") if k in implied})
        return out


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build ``name`` (any form above) with ``kwargs``; every failure is ``BadInput``."""
    return resolve(name).create(**kwargs)


def model_kwargs(name: str) -> dict[str, inspect.Parameter]:
    """Keyword arguments the factory of ``name`` accepts by name (for recipe validation)."""
    return dict(resolve(name).params)


def resolve(name: str) -> ModelSource:
    """The factory ``name`` refers to, or ``BadInput`` saying why there is none."""
    if not isinstance(name, str) or not name:
        raise BadInput(f"recipe key model.name: expected a model name, got {name!r}")
    if ":" not in name:
        factory = registry_factory(name)
        if factory is None:
            raise BadInput(
                f"model.name: unknown model {name!r}; valid: {', '.join(list_models())}, or "
                f"torchvision:NAME, timm:NAME, MODULE:CALLABLE (an import path)"
            )
        return _source(name, "registry", factory)
    prefix, _, attr = name.partition(":")
    if not prefix or not attr:
        raise BadInput(
            f"model.name: {name!r} is not MODULE:CALLABLE (both parts are needed, e.g. "
            f"mynets:build)"
        )
    if prefix == "torchvision":
        return _torchvision(name, attr)
    if prefix == "timm":
        return _timm(name, attr)
    module = import_user_module(prefix, name)
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            callables = sorted(
                n
                for n, v in vars(module).items()
                if callable(v) and not n.startswith("_") and getattr(v, "__module__", "") == prefix
            )
            hint = f"; it defines {', '.join(callables[:8])}" if callables else ""
            raise BadInput(
                f"model.name: module {prefix!r} ({_where(module)}) has no {attr!r}{hint}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise BadInput(f"model.name: {name} is a {type(target).__name__}, not a callable")
    return _source(name, "import", target)


def import_user_module(module_name: str, spec: str):
    """Import ``module_name`` with the working directory importable (as ``python -m`` does)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise BadInput(
                f"model.name: cannot import module {module_name!r} for {spec} (no such module "
                f"in the working directory {cwd} or on the path); put {module_name.split('.')[0]}"
                f".py (or the package) there, add its folder to PYTHONPATH, or pip install it"
            ) from None
        raise BadInput(
            f"model.name: module {module_name!r} for {spec} imports {e.name!r}, which is not "
            f"installed; pip install it"
        ) from None
    except Exception as e:  # noqa: BLE001 - whatever the user's module raises on import
        raise BadInput(
            f"model.name: importing module {module_name!r} for {spec} raised "
            f"{type(e).__name__}: {one_line(e, 200)}"
        ) from None


def _torchvision(name: str, attr: str) -> ModelSource:
    try:
        import torchvision.models as tvm
    except Exception as e:  # noqa: BLE001 - a CUDA build next to a CPU torch raises oddly
        raise BadInput(
            f"model.name: {name} needs torchvision, which cannot be imported here "
            f"({type(e).__name__}: {one_line(e, 120)}); pip install the torchvision "
            f"build that matches your torch"
        ) from None
    try:
        factory = tvm.get_model_builder(attr)
    except ValueError:
        raise BadInput(
            f"model.name: torchvision has no model {attr!r}; see torchvision.models.list_models()"
        ) from None
    return _source(name, "torchvision", factory)


def _timm(name: str, attr: str) -> ModelSource:
    try:
        import timm
    except Exception as e:  # noqa: BLE001
        raise BadInput(
            f"model.name: {name} needs timm, which cannot be imported here "
            f"({type(e).__name__}: {one_line(e, 120)}); pip install timm"
        ) from None
    if not timm.is_model(attr):
        raise BadInput(f"model.name: timm has no model {attr!r}; see timm.list_models()")

    def factory(**kwargs):
        return timm.create_model(attr, **kwargs)

    return ModelSource(name, "timm", factory, {}, True)


def _source(name: str, kind: str, factory: Callable[..., Any]) -> ModelSource:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return ModelSource(name, kind, factory, {}, True)
    params = {
        p.name: p
        for p in signature.parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }
    any_keyword = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    return ModelSource(name, kind, factory, params, any_keyword)


_PRETRAINED_KEYS = {
    "torchvision": ("weights", "pretrained"),
    "timm": ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay"),
}


def _refuse_pretrained(name: str, kind: str, kwargs: dict[str, Any]) -> None:
    for key in _PRETRAINED_KEYS.get(kind, ("pretrained",)):
        value = kwargs.get(key)
        if value not in (None, False, ""):
            raise BadInput(
                f"model.{key}: {value!r} asks for pretrained weights; chase-deploy never downloads "
                f"anything: drop model.{key} to train {name} from scratch"
            )


def _show_kwargs(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())[:120]


def _where(module) -> str:
    return getattr(module, "__file__", None) or "a namespace package"
