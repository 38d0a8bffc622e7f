"""`chase-deploy ablate`: which channel score finds the channels a sparse network can lose?

The paper's Table 2, one-shot: take a network trained without channel pruning (S_c = 0), remove
a fraction of the channels of its prunable layers by one criterion, and measure validation top-1
with no retraining. Scoring and selection are the Chase controller's own (``train.channels``:
the same scores, the same exact walk with the recipe's β floor and ``align``), applied once to the
final weights instead of gradually during training. A removed channel has its producer rows (and
bias) and every consumer's input columns zeroed, which is exactly what physically slimming it
would compute.

``random`` draws its keys from a generator seeded with the recipe's seed, the same keys at every
sparsity, so its removed sets are nested like the other criteria's.
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from chase_deploy.analyze import Run, open_run
from train.atomic import write_bytes, write_json, write_text
from train.config import CRITERIA
from train.errors import BadInput
from train.models.groups import ChannelGroup

DEFAULT_CRITERIA = CRITERIA
DEFAULT_SPARSITIES = (0.1, 0.2, 0.3, 0.5)
EVAL_CHUNK = 128


@dataclass
class Cut:
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
        from train.channels import channel_plan

        plan = channel_plan([(g.producers, g.width) for g in self.groups], self.alive)
        return {
            "criterion": self.criterion,
            "channel_sparsity": self.sparsity,
            "scheduled": self.scheduled,
            "removed": self.removed,
            "val_acc": self.val_acc,
            "widths": self.widths(),
            "plan": plan,
        }


# ----------------------------------------------------------------------------------------------
# Arguments


def parse_criteria(text: str | Sequence[str]) -> list[str]:
    """``umm,ws,...`` → list, in the given order, duplicates dropped; unknown names refused."""
    names = _split(text, "--criteria")
    unknown = [n for n in names if n not in CRITERIA]
    if unknown:
        raise BadInput(
            f"--criteria: unknown criterion {unknown[0]!r}; valid: {', '.join(CRITERIA)}"
        )
    return list(dict.fromkeys(names))


def parse_sparsities(text: str | Sequence[str]) -> list[float]:
    """``0.1,0.2`` → sorted unique fractions, each in [0, 1)."""
    values = []
    for item in _split(text, "--channel-sparsity"):
        try:
            value = float(item)
        except ValueError:
            raise BadInput(
                f"--channel-sparsity: {item!r} is not a number; e.g. 0.1,0.2,0.3,0.5"
            ) from None
        if not (0.0 <= value < 1.0):
            raise BadInput(
                f"--channel-sparsity: {item} is outside [0, 1); it is the fraction of channels removed"
            )
        values.append(value)
    return sorted(set(values))


def _split(text: str | Sequence[str], option: str) -> list[str]:
    items = text.split(",") if isinstance(text, str) else [str(i) for i in text]
    items = [i.strip() for i in items if i.strip()]
    if not items:
        raise BadInput(f"{option}: empty; give a comma-separated list")
    return items


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
        align: int,
        seed: int,
    ):
        from train.channels import channel_stats

        self.groups, self.beta, self.align, self.seed = list(groups), beta, align, seed
        modules = dict(model.named_modules())
        sums, nonzeros, fans = [], [], []
        for g in self.groups:
            abs_sum, nonzero, fan = channel_stats([modules[p].weight for p in g.producers])
            sums.append(abs_sum)
            nonzeros.append(nonzero)
            fans.append(torch.full((g.width,), float(fan), dtype=torch.float64))
        self.abs_sum, self.nonzero, self.fan = torch.cat(sums), torch.cat(nonzeros), torch.cat(fans)
        self.group_ids = torch.cat(
            [torch.full((g.width,), i, dtype=torch.long) for i, g in enumerate(self.groups)]
        )
        self.total = sum(g.width for g in self.groups)

    def keys(self, criterion: str) -> Tensor:
        from train.channels import prune_keys

        generator = torch.Generator().manual_seed(self.seed)
        return prune_keys(self.abs_sum, self.nonzero, self.fan, criterion, generator)

    def cut(self, criterion: str, sparsity: float) -> Cut:
        from train.channels import channel_floor, removal_count, select_channels

        count = removal_count(self.total, self.total, sparsity, self.align)
        widths = [g.width for g in self.groups]
        floors = [channel_floor(w, sparsity, self.beta, self.align) for w in widths]
        chosen = select_channels(
            self.keys(criterion), self.group_ids, widths, floors, self.align, count
        )
        alive = [~d for d in torch.split(chosen, widths)]
        return Cut(criterion, sparsity, count, alive, groups=self.groups)


def pruned_copy(
    model: nn.Module, groups: Sequence[ChannelGroup], alive: Sequence[Tensor]
) -> nn.Module:
    """A copy of ``model`` with the dead channels' producer rows, biases and consumer columns zeroed."""
    pruned = copy.deepcopy(model)
    modules = dict(pruned.named_modules())
    with torch.no_grad():
        for g, keep in zip(groups, alive, strict=True):
            dead = ~keep.to(torch.bool)
            if not dead.any():
                continue
            for name in g.producers:
                modules[name].weight[dead] = 0
                if getattr(modules[name], "bias", None) is not None:
                    modules[name].bias[dead] = 0
            for name in g.consumers:
                modules[name].weight[:, dead] = 0
    return pruned


@torch.inference_mode()
def evaluate(model: nn.Module, loader, device: torch.device, chunk: int = EVAL_CHUNK) -> float:
    """Top-1 over the whole validation loader.

    Batches are run in chunks of ``chunk`` images: on the CPU a 1000-image batch of 28x28 maps
    allocates tens of MB per activation, which the allocator maps fresh every time (page faults
    cost twice the convolutions themselves); 128-image chunks reuse memory and run 2-3x faster.
    """
    model.eval().to(device)
    correct, total = 0, 0
    for x, y in loader.batches(0):
        for xs, ys in zip(x.split(chunk), y.split(chunk), strict=True):
            correct += int((model(xs.to(device)).argmax(1).cpu() == ys).sum())
            total += len(ys)
    return correct / max(total, 1)


# ----------------------------------------------------------------------------------------------
# The study


def ablate_run(
    run_dir: str | Path,
    criteria: Sequence[str] = DEFAULT_CRITERIA,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    out: str | Path | None = None,
    *,
    device: str = "auto",
    on_result: Callable[[Cut], None] | None = None,
) -> Path:
    """Run the study; writes ablate.md, ablate.json and ablate.png into ``out`` (default
    RUN_DIR/ablate) and returns the markdown path."""
    from train.checkpoint import build_model_from_checkpoint
    from train.config import load_recipe
    from train.data import build_data
    from train.loop import select_device

    criteria, sparsities = parse_criteria(criteria), parse_sparsities(sparsities)
    run = open_run(run_dir)
    check_unstructured(run)
    if not (run.path / "recipe.yaml").is_file():
        raise BadInput(
            f"{run.path}: no recipe.yaml; pass the --out of a completed `chase-deploy train`"
        )
    recipe = load_recipe(run.path / "recipe.yaml")
    dev = select_device(device)
    model = build_model_from_checkpoint(run.ckpt)
    groups = model.channel_groups(prune_skip=recipe.chase.prune_skip)
    if not groups:
        raise BadInput(
            f"model {recipe.model.name} declares no prunable channel groups; nothing to ablate"
        )
    data = build_data(recipe.data, recipe.seed)
    selector = Selector(
        model, groups, beta=recipe.chase.beta, align=recipe.chase.align, seed=recipe.seed
    )
    baseline = evaluate(model, data.val, dev)
    cuts = []
    for criterion in criteria:
        for sparsity in sparsities:
            cut = selector.cut(criterion, sparsity)
            cut.val_acc = evaluate(pruned_copy(model, groups, cut.alive), data.val, dev)
            cuts.append(cut)
            if on_result is not None:
                on_result(cut)
    out = Path(out) if out is not None else run.path / "ablate"
    result = {
        "run": str(run.path),
        "model": recipe.model.name,
        "data": recipe.data.name,
        "density": recipe.chase.density,
        "beta": recipe.chase.beta,
        "align": recipe.chase.align,
        "channels": selector.total,
        "groups": [{"name": g.name, "width": g.width} for g in groups],
        "baseline_acc": baseline,
        "criteria": criteria,
        "sparsities": sparsities,
        "results": [c.to_json() for c in cuts],
    }
    write_json(out / "ablate.json", result)
    write_bytes(out / "ablate.png", plot_ablation(result))
    path = out / "ablate.md"
    write_text(path, ablation_markdown(result))
    return path


# ----------------------------------------------------------------------------------------------
# Outputs


def _table(result: dict[str, Any]) -> dict[str, dict[float, dict[str, Any]]]:
    table: dict[str, dict[float, dict[str, Any]]] = {}
    for r in result["results"]:
        table.setdefault(r["criterion"], {})[r["channel_sparsity"]] = r
    return table


def ablation_markdown(result: dict[str, Any]) -> str:
    """Criteria as rows, channel sparsities as columns, top-1 in the cells (the paper's Table 2)."""
    sparsities, table = result["sparsities"], _table(result)
    scheduled = {r["channel_sparsity"]: r["scheduled"] for r in result["results"]}
    head = " | ".join(f"S_c {s:g} ({scheduled[s]} ch)" for s in sparsities)
    lines = [
        f"# Channel criterion study: {result['model']} on {result['data']}",
        "",
        f"One-shot channel pruning of `{result['run']}` (density {result['density']:g}, no channels "
        f"pruned in training) over {result['channels']} channels in {len(result['groups'])} prunable "
        f"layers, beta {result['beta']:g}, align {result['align']}; validation top-1 without retraining. "
        f"Unpruned: **{100 * result['baseline_acc']:.2f} %**.",
        "",
        f"| criterion | {head} |",
        "|---|" + "---:|" * len(sparsities),
    ]
    for criterion, row in table.items():
        cells = []
        for s in sparsities:
            r = row[s]
            short = "" if r["removed"] == r["scheduled"] else f" ({r['removed']} ch)"
            cells.append(f"{100 * r['val_acc']:.2f}{short}")
        lines.append(f"| {criterion} | {' | '.join(cells)} |")
    lines += ["", "![accuracy vs channel sparsity](ablate.png)", ""]
    return "\n".join(lines)


def plot_ablation(result: dict[str, Any]) -> bytes:
    """Accuracy against channel sparsity, one line per criterion; reversed ones dashed."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    colors = colormaps["tab10"]
    bases = list(dict.fromkeys(c.removesuffix("_reverse") for c in result["criteria"]))
    for criterion, row in _table(result).items():
        base = criterion.removesuffix("_reverse")
        xs = sorted(row)
        ys = [100 * row[s]["val_acc"] for s in xs]
        if xs[0] > 0:  # every line starts at the unpruned model
            xs, ys = [0.0, *xs], [100 * result["baseline_acc"], *ys]
        ax.plot(
            xs,
            ys,
            marker="o",
            ms=4,
            ls="--" if criterion.endswith("_reverse") else "-",
            color=colors(bases.index(base)),
            label=criterion,
        )
    ax.axhline(100 * result["baseline_acc"], color="gray", lw=1, ls=":", label="unpruned")
    ax.set(
        xlabel="channel sparsity (one-shot, no retraining)",
        ylabel="validation top-1 (%)",
        title=f"Channel criteria: {result['model']} on {result['data']}",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()
