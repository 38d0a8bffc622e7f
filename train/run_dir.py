"""The run directory: every file a run writes, named once.

``chase-deploy train`` fills the training part, ``slim`` the ONNX part (into a checkpoint's own
directory by default), ``run`` all of it plus its stage bookkeeping and ``report.md``; ``analyze``
and ``ablate`` read a finished run and write into their own subdirectories. Every module that
reads or writes one of these files takes the path from here, so a name changes in one place.
The names themselves are part of the product contract (``docs/file-formats.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # -- train ----------------------------------------------------------------------------------
    @property
    def recipe(self) -> Path:
        """The fully resolved recipe."""
        return self.path / "recipe.yaml"

    @property
    def metrics(self) -> Path:
        """One JSON object per line: epochs, explorations, channel events."""
        return self.path / "metrics.jsonl"

    @property
    def last(self) -> Path:
        """The resumable checkpoint, rewritten every epoch."""
        return self.path / "checkpoints" / "last.pt"

    @property
    def final(self) -> Path:
        return self.path / "final.pt"

    @property
    def sources(self) -> Path:
        """Where the starting weights and the distillation teacher came from, with sha256."""
        return self.path / "sources.json"

    @property
    def plan(self) -> Path:
        return self.path / "channel_plan.json"

    @property
    def groups(self) -> Path:
        """The channel groups training used (``train.groups.ModelGroups.to_dict``)."""
        return self.path / "channel_groups.json"

    # -- slim -----------------------------------------------------------------------------------
    @property
    def slim_report(self) -> Path:
        return self.path / "slim_report.json"

    def onnx(self, model: str) -> Path:
        """``dense.onnx`` or ``slim.onnx``."""
        return self.path / f"{model}.onnx"

    def pt2(self, model: str) -> Path:
        """``dense.pt2`` or ``slim.pt2``: the PyTorch programs (``torch.export``)."""
        return self.path / f"{model}.pt2"

    # -- build ----------------------------------------------------------------------------------
    def engine(self, model: str) -> Path:
        """``dense.engine`` or ``slim.engine``."""
        return self.path / f"{model}.engine"

    @property
    def timing_cache(self) -> Path:
        return self.path / "timing.cache"

    # -- bench ----------------------------------------------------------------------------------
    def bench_json(self, backend: str) -> Path:
        return self.path / f"bench_{backend}.json"

    def bench_png(self, backend: str) -> Path:
        return self.path / f"bench_{backend}.png"

    def front_png(self, backend: str) -> Path:
        """Top-1 against throughput of every benched model (fp32 and int8) on ``backend``."""
        return self.path / f"front_{backend}.png"

    # -- run ------------------------------------------------------------------------------------
    @property
    def stages(self) -> Path:
        """The results of the finished stages of ``run`` (what makes it resumable)."""
        return self.path / "stages.json"

    @property
    def timings(self) -> Path:
        return self.path / "timings.json"

    @property
    def report(self) -> Path:
        return self.path / "report.md"

    @property
    def training_png(self) -> Path:
        return self.path / "training.png"

    @property
    def widths_png(self) -> Path:
        return self.path / "widths.png"

    @property
    def epoch_time_png(self) -> Path:
        """Seconds per epoch of a shrinking run (and of its masked twin)."""
        return self.path / "epoch_time.png"

    # -- analyze and ablate ---------------------------------------------------------------------
    @property
    def analysis(self) -> Path:
        """Where ``analyze`` writes by default."""
        return self.path / "analysis"

    @property
    def ablate(self) -> Path:
        """Where ``ablate`` writes by default."""
        return self.path / "ablate"
