"""Recipes: YAML files read into typed, range-checked dataclasses.

Every field carries its type and range; ``load_recipe`` refuses unknown keys, wrong types and
out-of-range values with one line naming the key, before any work starts.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from train.errors import BadInput


def _f(
    default: Any = dataclasses.MISSING,
    *,
    lo=None,
    hi=None,
    lo_open=False,
    hi_open=False,
    choices: tuple | None = None,
    factory=None,
    help: str = "",
) -> Any:
    meta = {
        "lo": lo,
        "hi": hi,
        "lo_open": lo_open,
        "hi_open": hi_open,
        "choices": choices,
        "help": help,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


DATASETS = ("digits", "cifar10", "cifar100", "imagefolder", "synthetic", "fashion_mnist", "mnist")
GROWTH = ("gradient", "random")
CRITERIA = ("umm", "ws", "mmm", "random", "umm_reverse", "ws_reverse", "mmm_reverse")
# One-shot criteria for `ablate`: the controller's plus Network Slimming's BatchNorm |gamma|.
ABLATE_CRITERIA = (*CRITERIA, "slimming", "slimming_reverse")
ABLATE_BN_BATCHES = 100  # training batches that re-estimate BatchNorm after a one-shot cut
BACKENDS = ("auto", "ort-cpu", "ort-cuda", "ort-trt", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16")  # of TensorRT engines (recipe and `build --precision`)
INT8_TARGETS = ("cpu", "tensorrt")  # the Q/DQ forms of `quantize --target` and deploy.int8_target


@dataclass
class ModelConfig:
    name: str = _f(
        "resnet_quick",
        help="a registry name (`chase-deploy train --list-models`), torchvision:NAME, timm:NAME "
        "or MODULE:CALLABLE (an import path; the working directory is importable)",
    )
    kwargs: dict = _f(factory=dict, help="the model factory's keyword arguments")
    weights: str | None = _f(
        None,
        help="start from these weights: a run directory or checkpoint (its final.pt), a state "
        "dict (.pt/.pth) or a .safetensors file (train.weights); keys and shapes must match",
    )
    weights_ignore: list[str] = _f(
        factory=list, help="globs of state-dict keys left at their initial values (e.g. fc.*)"
    )


@dataclass
class DataConfig:
    name: str = _f("digits", choices=DATASETS)
    root: str | None = _f(
        None,
        help="where the data lives; fashion_mnist defaults to /usr/share/datasets/fashion-mnist",
    )
    batch_size: int = _f(128, lo=1, help="global batch size, split evenly across DDP processes")
    eval_batch_size: int = _f(512, lo=1)
    workers: int = _f(0, lo=0, hi=64)
    image_size: int | None = _f(None, lo=4, hi=1024, help="resize/upscale to this size")
    augment: bool = _f(True)
    crop_padding: int = _f(4, lo=0, hi=64)
    flip: bool = _f(True)
    val_fraction: float = _f(0.2, lo=0.0, hi=1.0, lo_open=True, hi_open=True, help="digits split")
    num_classes: int = _f(10, lo=2, help="synthetic only")
    channels: int = _f(3, lo=1, hi=16, help="synthetic only")
    num_train: int = _f(1024, lo=1, help="synthetic only")
    num_val: int = _f(256, lo=1, help="synthetic only")


@dataclass
class DistillConfig:
    teacher: str | None = _f(
        None,
        help="knowledge distillation from this network (train.distill): a run directory or "
        "checkpoint, or a weights file with train.distill.model; null is off",
    )
    alpha: float = _f(
        0.9, lo=0.0, hi=1.0, lo_open=True, help="loss (1-alpha)·CE + alpha·T²·KL(teacher‖student)"
    )
    temperature: float = _f(4.0, lo=0.0, hi=100.0, lo_open=True, help="T, softening both sides")
    model: dict | None = _f(
        None,
        help="the teacher's model section ({name: ..., its arguments}) when teacher is a weights "
        "file; a checkpoint names its own",
    )


@dataclass
class TrainConfig:
    epochs: int = _f(10, lo=1, hi=10000)
    lr: float = _f(0.1, lo=0.0, lo_open=True, hi=100.0)
    momentum: float = _f(0.9, lo=0.0, hi=1.0, hi_open=True)
    nesterov: bool = _f(False)
    weight_decay: float = _f(5e-4, lo=0.0, hi=1.0)
    no_decay_norm_bias: bool = _f(False, help="no weight decay on norm layers and biases")
    lr_schedule: str = _f("cosine", choices=("constant", "step", "multistep", "cosine"))
    milestones: list[int] = _f(factory=list, help="epochs of the multistep LR drops")
    step_size: int = _f(30, lo=1, help="epochs between step LR drops")
    gamma: float = _f(0.1, lo=0.0, hi=1.0, lo_open=True)
    warmup_epochs: float = _f(0.0, lo=0.0)
    label_smoothing: float = _f(0.0, lo=0.0, hi=1.0, hi_open=True)
    aux_weight: float | None = _f(
        None,
        lo=0.0,
        help="weight of each auxiliary output's loss (models whose training forward returns "
        "more than the logits, train.outputs); default: GoogLeNet 0.3, Inception-v3 0.4, else 0.3",
    )
    amp: str = _f("none", choices=("none", "bf16", "fp16"), help="CUDA only; ignored on the CPU")
    channels_last: bool = _f(False, help="CUDA only")
    grad_clip: float = _f(0.0, lo=0.0, help="max global grad norm; 0 is off")
    distill: DistillConfig = _f(factory=DistillConfig)


@dataclass
class ChaseConfig:
    density: float = _f(0.1, lo=0.0, hi=1.0, lo_open=True)
    init: str = _f(
        "erk",
        choices=("erk", "er", "uniform", "snip", "grasp"),
        help="layer-wise densities of the initial random masks; snip and grasp take each "
        "layer's count from a one-shot saliency ranking at init (train.saliency)",
    )
    init_batches: int = _f(
        1, lo=1, hi=10000, help="training batches that score the snip/grasp saliency"
    )
    dense_layers: list[str] = _f(factory=list)
    update_every: int = _f(1000, lo=1)
    growth_extra: float = _f(0.05, lo=0.0, hi=1.0)
    growth_extra_end: float = _f(0.0, lo=0.0, hi=1.0)
    growth: str = _f(
        "gradient", choices=GROWTH, help="regrow by largest |grad| (RigL, Chase) or at random (SET)"
    )
    scope: str = _f("global", choices=("global", "layerwise"))
    explore_until: int | None = _f(
        None, lo=0, help="epoch tau_stop; default epochs - 30 (or 3/4 of short runs)"
    )
    channel_until: int | None = _f(
        None,
        lo=0,
        help="epoch where gradual channel pruning ends (T_c); default explore_until. Lets "
        "SET/RigL (explore_until 0) run beside gradual channel pruning",
    )
    after_stop: str = _f("continue", choices=("continue", "freeze"))
    drop_fraction: float | None = _f(
        None,
        lo=0.0,
        hi=1.0,
        help="q0 of the hard-budget exchange, q(t) = q0·(1 + cos(π·t/T_end))/2 (SET/RigL: 0.3); "
        "default: the released code's 0.005 + 0.495·(1 + cos(π·t/T))/2",
    )
    drop_until: float | None = _f(
        None,
        lo=0.0,
        hi=1.0,
        lo_open=True,
        help="fraction of training where q(t) reaches 0 and exploring stops (SET/RigL: 0.75); "
        "default 1 (needs drop_fraction)",
    )
    channel_sparsity: float = _f(0.5, lo=0.0, hi=1.0, hi_open=True)
    channel_every: int = _f(1000, lo=2)
    channel_offset: int | None = _f(
        None,
        lo=0,
        help="channel events at (t + offset) mod channel_every = 0; default update_every // 2 "
        "(the released code); 0 = every channel_every steps (the paper's wording)",
    )
    channel_schedule: str = _f("cubic", choices=("cubic", "cosine"))
    beta: float = _f(0.5, lo=0.0, hi=1.0)
    criterion: str = _f("umm", choices=CRITERIA)
    align: int = _f(1, lo=1, hi=512, help="width rounding during training (train.rounding)")
    prune_skip: bool = _f(False)
    shrink: bool = _f(
        False,
        help="rebuild the model physically smaller as channels are removed (train.shrink); "
        "the same training as the masked model, faster once channels are gone",
    )

    @property
    def round_to(self) -> int:
        """Width rounding (``train.rounding``); the recipe contract names it ``chase.align``."""
        return self.align


# The paper's / released code's vocabulary, accepted where it is unambiguous.
CHASE_ALIASES = {
    "sparse_init": "init",
    "update_frequency": "update_every",
    "death_rate": "growth_extra",
    "prune_rate": "growth_extra",
    "start_layer_rate": "channel_sparsity",
    "layer_interval": "channel_every",
    "minumum_ratio": "beta",
    "minimum_ratio": "beta",
    "stop_gmp_epochs": "channel_until",
}
_VALUE_ALIASES = {("chase", "init"): {"fixed_erk": "erk"}}


@dataclass
class DeployConfig:
    opset: int = _f(18, lo=18, hi=23)
    round_to: int = _f(8, lo=1, hi=512)
    backends: list[str] = _f(factory=lambda: ["auto"], help=f"any of {', '.join(BACKENDS)}")
    batch_sizes: list[int] = _f(factory=lambda: [1, 8, 32])
    duration_s: float = _f(2.0, lo=0.0, lo_open=True, hi=3600.0)
    warmup_ms: float = _f(200.0, lo=0.0)
    threads: int | None = _f(None, lo=1, hi=1024)
    precision: str = _f("fp32", choices=PRECISIONS)
    int8: bool = _f(False, help="also quantize dense.onnx and slim.onnx to int8 and bench them")
    int8_target: str = _f("cpu", choices=INT8_TARGETS, help="the Q/DQ form (`quantize --target`)")


@dataclass
class Recipe:
    seed: int = _f(0, lo=0, hi=2**31 - 1)
    model: ModelConfig = _f(factory=ModelConfig)
    data: DataConfig = _f(factory=DataConfig)
    train: TrainConfig = _f(factory=TrainConfig)
    chase: ChaseConfig = _f(factory=ChaseConfig)
    deploy: DeployConfig = _f(factory=DeployConfig)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        model = out.pop("model")
        out["model"] = {"name": model["name"], **model["kwargs"]}
        # Unused starting weights and distillation leave no key: recipes and checkpoints of runs
        # without them read (and resume) as before.
        if model["weights"] is not None:
            out["model"]["weights"] = model["weights"]
        if model["weights_ignore"]:
            out["model"]["weights_ignore"] = model["weights_ignore"]
        if out["train"]["distill"]["teacher"] is None:
            del out["train"]["distill"]
        return {k: out[k] for k in ("seed", "model", "data", "train", "chase", "deploy")}

    @property
    def sparse(self) -> bool:
        """Whether the Chase controller has anything to do."""
        return self.chase.density < 1.0 or self.chase.channel_sparsity > 0.0


# --------------------------------------------------------------------------------------------
# Loading and validation


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a YAML recipe, apply ``KEY=VALUE`` overrides, validate everything."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BadInput(f"recipe {path}: no such file") from None
    except OSError as e:
        raise BadInput(f"recipe {path}: cannot read ({e.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise BadInput(f"recipe {path}:{where}: YAML syntax error: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise BadInput(
            f"recipe {path}: expected a mapping of sections at the top, got {type(raw).__name__}"
        )
    for item in overrides:
        apply_override(raw, item)
    return recipe_from_dict(raw)


def apply_override(raw: dict, item: str) -> None:
    """Apply one ``dotted.key=value`` override; the value is parsed as a YAML scalar or list."""
    if "=" not in item:
        raise BadInput(f"--set {item!r}: expected KEY=VALUE, e.g. chase.channel_sparsity=0.3")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise BadInput(f"--set {item!r}: empty key part")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    node = raw
    for p in parts[:-1]:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        if not isinstance(child, dict):
            raise BadInput(f"--set {key}: {p} is not a section")
        node = child
    node[parts[-1]] = parsed


def recipe_from_dict(raw: dict) -> Recipe:
    raw = dict(raw)
    model_raw = raw.pop("model", None) or {}
    if not isinstance(model_raw, dict):
        raise BadInput("recipe key model: expected a mapping with `name` and the model's arguments")
    recipe = _build(Recipe, {k: v for k, v in raw.items()}, "", skip={"model"})
    recipe.model = _build_model(model_raw)
    _cross_check(recipe)
    return recipe


def _build(cls: type, raw: Any, prefix: str, skip: set[str] = frozenset()) -> Any:
    where = prefix.rstrip(".") or "recipe"
    if not isinstance(raw, dict):
        raise BadInput(f"recipe key {where}: expected a mapping, got {_show(raw)}")
    section = prefix.rstrip(".")
    if cls is ChaseConfig:
        raw = {CHASE_ALIASES.get(k, k): v for k, v in raw.items()}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields) - skip)
    if unknown:
        valid = ", ".join(sorted(set(fields) - skip))
        raise BadInput(f"recipe key {prefix}{unknown[0]}: unknown key; valid keys here: {valid}")
    values = {}
    for name, f in fields.items():
        if name in skip or name not in raw:
            continue
        key = f"{prefix}{name}"
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, raw[name] if raw[name] is not None else {}, f"{key}.")
            continue
        value = raw[name]
        aliases = _VALUE_ALIASES.get((section, name))
        if aliases and isinstance(value, str):
            value = aliases.get(value.lower(), value)
        values[name] = _check(key, value, hint, f.metadata)
    return cls(**values)


def _check(key: str, value: Any, hint: Any, meta: typing.Mapping) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check(key, value, inner, meta)
    if origin is list:
        if not isinstance(value, list):
            if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                value = [value]
            else:
                raise BadInput(f"recipe key {key}: expected a list, got {_show(value)}")
        return [_check(f"{key}[{i}]", v, args[0], meta) for i, v in enumerate(value)]
    if hint is dict:
        if not isinstance(value, dict):
            raise BadInput(f"recipe key {key}: expected a mapping, got {_show(value)}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise BadInput(f"recipe key {key}: expected true or false, got {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise BadInput(f"recipe key {key}: expected an integer, got {_show(value)}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadInput(f"recipe key {key}: expected a number, got {_show(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise BadInput(f"recipe key {key}: expected a finite number, got {value}")
    elif hint is str:
        if not isinstance(value, str):
            raise BadInput(f"recipe key {key}: expected a string, got {_show(value)}")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise BadInput(f"recipe key {key}: {value!r} is not one of {', '.join(choices)}")
    _check_range(key, value, meta)
    return value


def _check_range(key: str, value: Any, meta: typing.Mapping) -> None:
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is None and hi is None:
        return
    bad_lo = lo is not None and (value <= lo if meta.get("lo_open") else value < lo)
    bad_hi = hi is not None and (value >= hi if meta.get("hi_open") else value > hi)
    if bad_lo or bad_hi:
        left = "(" if meta.get("lo_open") else "["
        right = ")" if meta.get("hi_open") else "]"
        rng = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        raise BadInput(f"recipe key {key}: {value} is out of range {rng}")


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}"


def _build_model(raw: dict, key: str = "model") -> ModelConfig:
    from train.models import resolve

    raw = dict(raw)
    name = raw.pop("name", "resnet_quick")
    if not isinstance(name, str):
        raise BadInput(f"recipe key {key}.name: expected a string, got {_show(name)}")
    start: dict[str, Any] = {}
    for field_name, hint in (("weights", str | None), ("weights_ignore", list[str])):
        if field_name in raw:
            if key != "model":
                raise BadInput(
                    f"recipe key {key}.{field_name}: the teacher's weights are "
                    f"train.distill.teacher; drop {key}.{field_name}"
                )
            meta = {f.name: f.metadata for f in dataclasses.fields(ModelConfig)}[field_name]
            start[field_name] = _check(f"model.{field_name}", raw.pop(field_name), hint, meta)
    try:
        source = resolve(name)
    except BadInput as e:
        text = str(e).removeprefix("recipe key ")
        if key != "model":
            text = text.replace("model.name", f"{key}.name", 1)
        raise BadInput(f"recipe key {text}") from None
    params = source.params
    for arg, value in raw.items():
        if arg not in params:
            if source.any_keyword:
                continue  # the factory takes **kwargs: it checks the key itself
            valid = ", ".join(sorted(params))
            extra = ", weights, weights_ignore" if key == "model" else ""
            raise BadInput(
                f"recipe key {key}.{arg}: not an argument of {name}; valid: name{extra}, {valid}"
            )
        default = params[arg].default
        if isinstance(default, bool):
            _check(f"{key}.{arg}", value, bool, {})
        elif isinstance(default, int):
            _check(f"{key}.{arg}", value, int, {"lo": 1})
        elif isinstance(default, float):
            _check(f"{key}.{arg}", value, float, {})
        elif isinstance(default, str):
            _check(f"{key}.{arg}", value, str, {})
    return ModelConfig(name=name, kwargs=raw, **start)


def _cross_check(r: Recipe) -> None:
    _check_distill(r.train.distill)
    if r.chase.explore_until is not None and r.chase.explore_until > r.train.epochs:
        raise BadInput(
            f"recipe key chase.explore_until: {r.chase.explore_until} is past train.epochs ({r.train.epochs})"
        )
    if r.chase.channel_until is not None and r.chase.channel_until > r.train.epochs:
        raise BadInput(
            f"recipe key chase.channel_until: {r.chase.channel_until} is past train.epochs ({r.train.epochs})"
        )
    if r.chase.shrink and r.chase.channel_sparsity <= 0:
        raise BadInput(
            "recipe key chase.shrink: needs chase.channel_sparsity > 0 (without channel pruning "
            "there is nothing to shrink); set chase.shrink: false"
        )
    if r.chase.growth_extra_end > r.chase.growth_extra:
        raise BadInput("recipe key chase.growth_extra_end: must not exceed chase.growth_extra")
    if r.chase.drop_until is not None and r.chase.drop_fraction is None:
        raise BadInput(
            "recipe key chase.drop_until: only with chase.drop_fraction (the default exchange rate "
            "of the released code runs to the end of training); set chase.drop_fraction too"
        )
    if r.train.warmup_epochs > r.train.epochs:
        raise BadInput(
            f"recipe key train.warmup_epochs: {r.train.warmup_epochs} is past train.epochs"
        )
    for i, m in enumerate(r.train.milestones):
        if not 0 < m <= r.train.epochs:
            raise BadInput(
                f"recipe key train.milestones[{i}]: {m} is out of range [1, {r.train.epochs}]"
            )
    for i, b in enumerate(r.deploy.backends):
        if b not in BACKENDS:
            raise BadInput(
                f"recipe key deploy.backends[{i}]: {b!r} is not one of {', '.join(BACKENDS)}"
            )
    for i, b in enumerate(r.deploy.batch_sizes):
        if b < 1:
            raise BadInput(f"recipe key deploy.batch_sizes[{i}]: {b} is not a positive integer")
    if r.data.name in ("cifar10", "cifar100", "imagefolder", "mnist") and not r.data.root:
        raise BadInput(
            f"recipe key data.root: dataset {r.data.name} needs data.root (where the files are)"
        )


def _check_distill(d: DistillConfig) -> None:
    """``train.distill.model`` names a network the registry can build (the file is read later)."""
    if d.model is None:
        return
    if d.teacher is None:
        raise BadInput(
            "recipe key train.distill.model: only with train.distill.teacher (a weights file whose "
            "network it names); set the teacher or drop train.distill.model"
        )
    if not isinstance(d.model.get("name"), str):
        raise BadInput(
            "recipe key train.distill.model: needs name (a model.name of any form) beside the "
            "teacher's arguments, e.g. {name: resnet_quick, width: 16}"
        )
    _build_model(d.model, key="train.distill.model")


def explore_until_epoch(r: Recipe) -> int:
    """tau_stop in epochs: the recipe's value, else E - 30, or 3/4 of runs of 40 epochs or fewer."""
    if r.chase.explore_until is not None:
        return r.chase.explore_until
    e = r.train.epochs
    return e - 30 if e > 40 else max(1, math.ceil(0.75 * e))


def channel_until_epoch(r: Recipe) -> int:
    """T_c in epochs, where gradual channel pruning ends: the recipe's value, else tau_stop."""
    if r.chase.channel_until is not None:
        return r.chase.channel_until
    return explore_until_epoch(r)
