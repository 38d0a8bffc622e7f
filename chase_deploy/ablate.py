"""`chase-deploy ablate`: which channel score finds the channels a sparse network can lose?

The paper's Table 2, one-shot: take a network trained without channel pruning (S_c = 0), remove
a fraction of the channels of its prunable layers by one criterion, and measure validation top-1
with no retraining. Scoring, selection and removal are the Chase controller's own
(``train.channel_scores``, ``train.channel_selection``: the same scores, the same exact walk with
the recipe's β floor and width rounding ``chase.align``, the same entries removed), applied once
to the final weights instead of gradually during training. A removed channel has its producer rows (and bias) and every
consumer's input columns zeroed, which is exactly what physically slimming it would compute.
Accuracy is ``train.accuracy``'s top-1, the same count as training's ``val_acc``.

``random`` draws its keys from a generator seeded with the recipe's seed, the same keys at every
sparsity, so its removed sets are nested like the other criteria's.

After each cut the BatchNorm statistics are re-estimated on ``bn_batches`` (augmented) training
batches, as the released code does after merging channels (``torch.optim.swa_utils.update_bn``,
a cumulative average): a removed channel's constant activation no longer matches the statistics
the following layers were trained with, and without re-estimation stale statistics, not the
criterion, decide the accuracy. The unpruned baseline is re-estimated the same way, so every row
is measured alike (its accuracy with the trained statistics is reported beside it).
``bn_batches = 0`` evaluates the cut as it is.

The per-layer floor is the source recipe's ``chase.beta`` (a layer keeps ⌊(1 − S_c)·β·width⌋
channels, as in training), applied to the one-shot cut; ``beta`` overrides it, and β 0 removes it
(every floor one channel: the plain global order).

Several source runs (the same recipe under different seeds) are studied alike, each with its own
selection, and every cell is reported as mean ± std over them, like the paper's Table 2.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from chase_deploy.analyze import Run, open_run
from chase_deploy.plots import plot_ablation
from train.accuracy import top1
from train.atomic import write_bytes, write_json, write_text
from train.channel_axes import producer_rows
from train.channel_scores import GroupStats, norm_scales
from train.channel_selection import Pool
from train.config import ABLATE_BN_BATCHES, ABLATE_CRITERIA
from train.errors import BadInput
from train.groups import ChannelGroup
from train.plan import plan_from_groups
from train.slicing import zero_removed

DEFAULT_CRITERIA = ABLATE_CRITERIA
DEFAULT_SPARSITIES = (0.1, 0.2, 0.3, 0.5)
DEFAULT_BN_BATCHES = ABLATE_BN_BATCHES
EVAL_CHUNK = 128


@dataclass
class OneShot:
    """The outcome of one one-shot pruning: survivors per group and the accuracy left."""

    criterion: str
    sparsity: float
    scheduled: int  # channels the sparsity asks for
    alive: list[Tensor]  # bool keep vector per group
    val_acc: float = math.nan
    groups: list[ChannelGroup] = field(default_factory=list, repr=False)

    @property
    def removed(self) -> int:
        return sum(int((~a).sum()) for a in self.alive)

    def widths(self) -> dict[str, int]:
        return {g.name: int(a.sum()) for g, a in zip(self.groups, self.alive, strict=True)}

    def to_json(self) -> dict[str, Any]:
        plan = plan_from_groups(self.groups, self.alive)
        return {
            "criterion": self.criterion,
            "channel_sparsity": self.sparsity,
            "scheduled": self.scheduled,
            "removed": self.removed,
            "val_acc": self.val_acc,
            "widths": self.widths(),
            "plan": plan.to_dict(),
        }


# ----------------------------------------------------------------------------------------------
# Checks


def check_unstructured(run: Run) -> None:
    """Refuse a run whose channels were already pruned: the study needs every channel alive."""
    layers = run.plan_layers
    sc = run.recipe.get("chase", {}).get("channel_sparsity", 0.0)
    if layers or sc:
        why = (
            f"its channel plan prunes {len(layers)} layers"
            if layers
            else f"chase.channel_sparsity is {sc}"
        )
        raise BadInput(
            f"{run.path} was trained with channel pruning ({why}); ablate needs an unstructured run: "
            f"train one with --set chase.channel_sparsity=0"
        )


# ----------------------------------------------------------------------------------------------
# Selection and pruning (the controller's functions, applied once)


class Selector:
    """Scores every channel of a model's prunable groups once; cuts by any criterion and sparsity."""

    def __init__(
        self,
        model: nn.Module,
        groups: Sequence[ChannelGroup],
        *,
        beta: float,
        round_to: int,
        seed: int,
    ):
        self.groups, self.beta, self.round_to, self.seed = list(groups), beta, round_to, seed
        modules = dict(model.named_modules())
        self.stats = GroupStats.of(
            [
                [producer_rows(modules[m.name], m, g.width) for m in g.role("producer")]
                for g in self.groups
            ],
            [norm_scales(modules, g) for g in self.groups],
        )
        self.total = sum(g.width for g in self.groups)

    def keys(self, criterion: str) -> Tensor:
        return self.stats.keys(criterion, torch.Generator().manual_seed(self.seed))

    def cut(self, criterion: str, sparsity: float) -> OneShot:
        pool = Pool.of(self.groups, sparsity, self.beta, self.round_to)
        count = pool.count(pool.total, sparsity)
        everything = [torch.ones(g.width, dtype=torch.bool) for g in self.groups]
        dead = pool.select(self.keys(criterion), everything, count)
        return OneShot(criterion, sparsity, count, [~d for d in dead], groups=self.groups)


def pruned_copy(
    model: nn.Module, groups: Sequence[ChannelGroup], alive: Sequence[Tensor]
) -> nn.Module:
    """A copy of ``model`` with every entry of the dead channels zeroed (producer rows and
    biases, consumer columns, depthwise filters: ``train.slicing.zero_removed``)."""
    return zero_removed(copy.deepcopy(model), groups, alive)


def evaluate(model: nn.Module, loader, device: torch.device, chunk: int = EVAL_CHUNK) -> float:
    """Top-1 over the whole validation loader, in chunks of ``chunk`` images (see
    ``train.accuracy.count_correct`` for why chunks)."""
    model.eval().to(device)
    return top1(lambda x: model(x.to(device)), loader.batches(0), chunk)


def reestimate_bn(model: nn.Module, loader, batches: int, device: torch.device) -> nn.Module:
    """Recompute every BatchNorm's running statistics from ``batches`` training batches
    (cumulative average); weights and every other buffer stay as they are."""
    if batches > 0:
        from torch.optim.swa_utils import update_bn

        model.to(device)
        inputs = (x.to(device) for x, _ in itertools.islice(loader.batches(0), batches))
        with torch.no_grad():
            update_bn(inputs, model)
    return model.eval()


# ----------------------------------------------------------------------------------------------
# The study


@dataclass
class Source:
    """One source run of the study, loaded."""

    run: Run
    recipe: Any  # train.config.Recipe
    model: nn.Module
    groups: list[ChannelGroup]
    data: Any  # train.data.DataBundle

    @property
    def signature(self) -> tuple:
        """What must agree between the runs of one study (everything but the seed)."""
        return (
            self.recipe.model.name,
            self.recipe.data.name,
            tuple((g.name, g.width) for g in self.groups),
        )


def _load_source(run_dir: str | Path) -> Source:
    from chase_deploy.saved_groups import checkpoint_groups
    from train.checkpoint import build_model_from_checkpoint
    from train.config import load_recipe
    from train.data import build_data

    run = open_run(run_dir)
    check_unstructured(run)
    if not run.files.recipe.is_file():
        raise BadInput(
            f"{run.path}: no recipe.yaml; pass the --out of a completed `chase-deploy train`"
        )
    recipe = load_recipe(run.files.recipe)
    model = build_model_from_checkpoint(run.ckpt)
    groups = list(checkpoint_groups(run.ckpt, recipe.chase.prune_skip, model=model))
    if not groups:
        raise BadInput(
            f"model {recipe.model.name} has no prunable channel groups (`chase-deploy inspect` "
            f"says why); nothing to ablate"
        )
    return Source(run, recipe, model, groups, build_data(recipe.data, recipe.seed))


def ablate_run(
    run_dirs: str | Path | Sequence[str | Path],
    criteria: Sequence[str] = DEFAULT_CRITERIA,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    out: str | Path | None = None,
    *,
    bn_batches: int = DEFAULT_BN_BATCHES,
    beta: float | None = None,
    device: str = "auto",
    on_result: Callable[[OneShot], None] | None = None,
) -> Path:
    """Run the study on one source run or several (seeds of one recipe); writes ablate.md,
    ablate.json and ablate.png into ``out`` (default RUN_DIR/ablate for one run, the runs'
    common parent's ablate/ for several) and returns the markdown path."""
    from train.loop import select_device

    dirs = [run_dirs] if isinstance(run_dirs, str | Path) else list(run_dirs)
    if not dirs:
        raise BadInput("ablate needs at least one run directory")
    if bn_batches < 0:
        raise BadInput(f"--bn-batches {bn_batches}: give 0 (no re-estimation) or more batches")
    sources = [_load_source(d) for d in dirs]
    for other in sources[1:]:
        if other.signature != sources[0].signature:
            raise BadInput(
                f"{other.run.path} and {sources[0].run.path} differ in model, data or channel "
                f"groups; a study over several runs needs the same recipe under different seeds"
            )
    dev = select_device(device)
    cuts: dict[tuple[str, float], list[OneShot]] = {}
    baselines, trained_bn = [], []
    floor = sources[0].recipe.chase.beta if beta is None else beta
    for source in sources:
        chase = source.recipe.chase
        selector = Selector(
            source.model, source.groups, beta=floor, round_to=chase.round_to,
            seed=source.recipe.seed,
        )  # fmt: skip
        trained_bn.append(evaluate(source.model, source.data.val, dev))
        unpruned = reestimate_bn(copy.deepcopy(source.model), source.data.train, bn_batches, dev)
        baselines.append(evaluate(unpruned, source.data.val, dev))
        for criterion in criteria:
            for sparsity in sparsities:
                cut = selector.cut(criterion, sparsity)
                pruned = pruned_copy(source.model, source.groups, cut.alive)
                reestimate_bn(pruned, source.data.train, bn_batches, dev)
                cut.val_acc = evaluate(pruned, source.data.val, dev)
                cuts.setdefault((criterion, sparsity), []).append(cut)
                if on_result is not None:
                    on_result(cut)
    first = sources[0]
    if out is None:
        out = first.run.files.ablate if len(sources) == 1 else _common_parent(dirs) / "ablate"
    result = {
        "run": str(first.run.path),
        "runs": [str(s.run.path) for s in sources],
        "seeds": [s.recipe.seed for s in sources],
        "model": first.recipe.model.name,
        "data": first.recipe.data.name,
        "density": first.recipe.chase.density,
        "beta": floor,
        "align": first.recipe.chase.round_to,  # the recipe key chase.align
        "channels": sum(g.width for g in first.groups),
        "groups": [{"name": g.name, "width": g.width} for g in first.groups],
        "bn_batches": bn_batches,
        "bn_images": bn_batches * first.data.train.batch_size,
        "baseline_acc": _mean(baselines),
        "baseline_std": _std(baselines),
        "baseline_accs": baselines,
        "baseline_acc_trained_bn": _mean(trained_bn),
        "baseline_accs_trained_bn": trained_bn,
        "criteria": list(criteria),
        "sparsities": list(sparsities),
        "results": [_cell(per_run) for per_run in cuts.values()],
    }
    out = Path(out)
    write_json(out / "ablate.json", result)
    write_bytes(out / "ablate.png", plot_ablation(result))
    path = out / "ablate.md"
    write_text(path, ablation_markdown(result))
    return path


def _cell(per_run: list[OneShot]) -> dict[str, Any]:
    """One criterion and sparsity over every run: the first run's cut, and the accuracy's spread."""
    accs = [c.val_acc for c in per_run]
    return {
        **per_run[0].to_json(),
        "val_acc": _mean(accs),
        "val_acc_std": _std(accs),
        "val_accs": accs,
        "removed_per_run": [c.removed for c in per_run],
    }


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values)


def _std(values: Sequence[float]) -> float:
    """Sample standard deviation (0 for one run)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _common_parent(paths: Sequence[str | Path]) -> Path:
    return Path(os.path.commonpath([Path(p).resolve() for p in paths]))


# ----------------------------------------------------------------------------------------------
# Outputs


def _table(result: dict[str, Any]) -> dict[str, dict[float, dict[str, Any]]]:
    table: dict[str, dict[float, dict[str, Any]]] = {}
    for r in result["results"]:
        table.setdefault(r["criterion"], {})[r["channel_sparsity"]] = r
    return table


def ablation_markdown(result: dict[str, Any]) -> str:
    """Criteria as rows, channel sparsities as columns, top-1 in the cells (the paper's Table 2);
    mean ± std over the source runs when there are several."""
    sparsities, table = result["sparsities"], _table(result)
    scheduled = {r["channel_sparsity"]: r["scheduled"] for r in result["results"]}
    several = len(result["runs"]) > 1
    head = " | ".join(f"S_c {s:g} ({scheduled[s]} ch)" for s in sparsities)
    source = (
        f"{len(result['runs'])} runs (seeds {', '.join(map(str, result['seeds']))}), mean ± std"
        if several
        else f"`{result['run']}`"
    )
    bn = (
        f"BatchNorm statistics re-estimated after each cut on {result['bn_batches']} training "
        f"batches ({result['bn_images']} images)"
        if result["bn_batches"]
        else "BatchNorm statistics not re-estimated (`--bn-batches 0`)"
    )
    lines = [
        f"# Channel criterion study: {result['model']} on {result['data']}",
        "",
        f"One-shot channel pruning of {source} (density {result['density']:g}, no channels "
        f"pruned in training) over {result['channels']} channels in {len(result['groups'])} prunable "
        f"layers, beta {result['beta']:g}, chase.align (width rounding) {result['align']}; validation "
        f"top-1 without retraining; {bn}. "
        f"Unpruned: **{_percent(result['baseline_acc'], result['baseline_std'], several)} %**"
        f"{_trained_bn(result)}.",
        "",
        f"| criterion | {head} |",
        "|---|" + "---:|" * len(sparsities),
    ]
    for criterion, row in table.items():
        cells = []
        for s in sparsities:
            r = row[s]
            short = "" if r["removed"] == r["scheduled"] else f" ({r['removed']} ch)"
            cells.append(f"{_percent(r['val_acc'], r.get('val_acc_std', 0.0), several)}{short}")
        lines.append(f"| {criterion} | {' | '.join(cells)} |")
    lines += ["", "![accuracy vs channel sparsity](ablate.png)", ""]
    return "\n".join(lines)


def _trained_bn(result: dict[str, Any]) -> str:
    """The unpruned model with its trained BatchNorm statistics, when they were re-estimated."""
    if not result["bn_batches"]:
        return ""
    return (
        f" (re-estimated as the cuts; {100 * result['baseline_acc_trained_bn']:.2f} % as trained)"
    )


def _percent(value: float, std: float, several: bool) -> str:
    return f"{100 * value:.2f} ± {100 * std:.2f}" if several else f"{100 * value:.2f}"
