"""Time dense / slim / slim --round-to 8 ResNet-50 (.pt2 from prepare.py) with PyTorch on the GPU.

    python tests/gpu/bench_resnet50.py --prepared DIR --out OUT/bench.json [--budget-s S] [--dry-run]

Backend ``torch-cuda`` (``--dry-run``: ``torch-cpu`` with tiny timings), bf16 (BatchNorm fp32),
channels_last, batches 1, 32 and 256 (dry run: 1 and 2), first eager, then ``torch.compile``.
Each mode loads the three programs once (read, moved to the device, and for ``compiled``
wrapped in one ``torch.compile`` each) and keeps them for all its batch sizes; the batch axis is
dynamic, so batches 256 and 32 share one compiled graph per model and batch 1 adds one. Every
phase is one ``chase_deploy.bench.measure`` call for one mode and batch size: the models
interleaved, CUDA events around CUDA-graph replays, inputs rotated among several batches
(``backends.rotation``: no replay reads a cached input), and ``check_outputs``: before anything
is timed the slim models must give the dense model's outputs on the same inputs (bf16
tolerance), or the phase fails and nothing is timed. Compiled phases run batch 256 first (the
goal's batch size).

The whole run fits ``--budget-s``: before each phase the time it will need is estimated
(``estimate_s``) and phases that do not fit are skipped and listed as such. A first compiled
phase is started whenever ``FIRST_COMPILE_S`` are left: if the compilations take longer,
``check.sh``'s timeout ends the run, which loses nothing finished, since the JSON is rewritten
after every phase (the check then says "incomplete").

``speedup`` is dense median latency / model median latency at the same batch and mode;
``of_bound`` is speedup / FLOP bound (dense FLOPs / model FLOPs, from prepare.json). The goal of
issue 13: at batch 256 with ``--round-to 8``, ``of_bound >= 0.9``. These are PyTorch/cuDNN
numbers (eager, or Inductor with cuDNN convolutions), not TensorRT.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from chase_deploy.backends import get_backend  # noqa: E402
from chase_deploy.backends.rotation import DESCRIPTION as ROTATION  # noqa: E402
from chase_deploy.bench import format_table, measure  # noqa: E402
from train.atomic import write_json  # noqa: E402
from train.errors import BadInput, one_line  # noqa: E402

MODELS = ("dense", "slim", "slim_r8")
BATCHES = (1, 32, 256)
DRY_BATCHES = (1, 2)
MODES = ("eager", "compiled")
GOAL_BATCH, GOAL_MODEL, GOAL_FRACTION = 256, "slim_r8", 0.9
FIRST_COMPILE_S = 60.0  # the least a first compiled phase takes: loading, three compilations
MARGIN_S = 5.0


def plan_phases(modes, batches) -> list[tuple[str, int]]:
    """(mode, batch) in run order: eager small to large, compiled from the goal's batch down."""
    phases = []
    for mode in modes:
        order = sorted(batches) if mode == "eager" else sorted(batches, reverse=True)
        phases.extend((mode, b) for b in order)
    return phases


def estimate_s(mode: str, batch: int, done: list[dict]) -> float:
    """Seconds the phase (``mode``, ``batch``) will likely take, from the finished ones: a first
    compiled phase at least ``FIRST_COMPILE_S``; compiled batch 1 (a graph of its own) as long
    as the first compiled phase; other phases as long as the longest finished one of their mode
    that compiled nothing (an eager one if no compiled phase is such yet)."""
    finished = [p for p in done if p["status"] == "done"]
    same = [p for p in finished if p["mode"] == mode]
    if not same:
        return FIRST_COMPILE_S if mode == "compiled" else 0.0
    if mode == "compiled" and batch == 1:
        return same[0]["seconds"]
    alike = same[1:] if mode == "compiled" else same
    alike = alike or [p for p in finished if p["mode"] == "eager"] or same
    return max(p["seconds"] for p in alike)


def table_rows(result: dict, names: dict[str, str], mode: str, bounds: dict) -> list[dict]:
    rows = []
    for r in result["results"]:
        name = names[r["model"]]
        bound = bounds.get(name)
        rows.append(
            {
                "model": name,
                "mode": mode,
                "batch": r["batch"],
                "median_ms": r["latency_ms"]["median"],
                "p90_ms": r["latency_ms"]["p90"],
                "throughput": r["throughput"],
                "speedup": r["speedup"],
                "flop_bound": bound,
                "of_bound": r["speedup"] / bound if bound else None,
            }
        )
    return rows


def goal(table: list[dict]) -> dict:
    rows = [r for r in table if r["model"] == GOAL_MODEL and r["batch"] == GOAL_BATCH]
    return {
        "what": f"{GOAL_MODEL} at batch {GOAL_BATCH}: speedup >= {GOAL_FRACTION} x FLOP bound",
        "measured": {r["mode"]: r["of_bound"] for r in rows},
        "met": bool(rows) and all(r["of_bound"] >= GOAL_FRACTION for r in rows),
    }


def run(args) -> dict:
    start = time.perf_counter()
    prepared = json.loads((args.prepared / "prepare.json").read_text())
    available = [m for m in MODELS if "path" in prepared["models"].get(m, {})]
    paths = [prepared["models"][m]["path"] for m in available]
    names = dict(zip(paths, available, strict=True))
    bounds = {m: prepared["models"][m]["flop_bound"] for m in available}
    backend = "torch-cpu" if args.dry_run else "torch-cuda"
    batches = DRY_BATCHES if args.dry_run else BATCHES
    warmup_ms, duration_s = (20, 0.05) if args.dry_run else (args.warmup_ms, args.duration_s)
    modes = [m for m in args.modes.split(",") if m]
    report = {
        "format": "chase-gpu-bench",
        "what": "PyTorch (eager / torch.compile) on .pt2 programs, bf16 (BatchNorm fp32), channels_last; not TensorRT",
        "inputs": ROTATION,
        "backend": backend,
        "models": {m: prepared["models"][m] for m in MODELS if m in prepared["models"]},
        "missing": [m for m in MODELS if m not in available],
        "input_shape": prepared["input_shape"],
        "budget_s": args.budget_s,
        "phases": [],
        "table": [],
        "environment": None,
    }

    def save() -> None:
        report["goal"] = goal(report["table"])
        report["seconds"] = round(time.perf_counter() - start, 1)
        write_json(args.out, report)

    for mode in modes:
        models = Models(backend, mode, paths, batches)
        try:
            for batch in phase_batches(mode, batches):
                phase = run_phase(
                    models, batch, start, args.budget_s, report, warmup_ms, duration_s
                )
                report["phases"].append(phase)
                if phase["status"] == "done":
                    report["table"].extend(table_rows(phase.pop("result"), names, mode, bounds))
                save()
        finally:
            models.close()
    report["complete"] = not report["missing"] and all(
        p["status"] == "done" for p in report["phases"]
    )
    save()
    print(summary(report), flush=True)
    return report


def phase_batches(mode: str, batches) -> list[int]:
    return [b for m, b in plan_phases([mode], batches)]


class Models:
    """The three programs on one backend for one mode, loaded when a phase first needs them and
    kept for the mode's other batch sizes (a compiled model keeps its compiled graphs)."""

    def __init__(self, backend: str, mode: str, paths: list[str], batches) -> None:
        self.backend, self.mode, self.paths, self.batches = backend, mode, paths, list(batches)
        self.runner = None
        self.loaded: list = []
        self.failure = ""

    def get(self):
        if not self.loaded and not self.failure:
            try:
                self.runner = get_backend(
                    self.backend,
                    precision="bf16",
                    channels_last=True,
                    compile=self.mode == "compiled",
                )
                self.loaded = [self.runner.load(Path(p), self.batches) for p in self.paths]
            except Exception as e:  # the same for every batch of this mode: said once per phase
                self.close()
                self.failure = f"loading: {one_line(e)}"
        if self.failure:
            raise RuntimeError(self.failure)
        return self.runner, self.loaded

    def close(self) -> None:
        for model in self.loaded:
            model.close()
        self.loaded = []


def run_phase(models: Models, batch: int, start, budget_s, report, warmup_ms, duration_s) -> dict:
    """One (mode, batch) phase: skipped if it does not fit the budget, else gated and timed."""
    mode = models.mode
    elapsed = time.perf_counter() - start
    need = estimate_s(mode, batch, report["phases"])
    phase: dict = {"mode": mode, "batch": batch}
    if elapsed + need + MARGIN_S > budget_s:
        phase.update(status="skipped", why=f"needs ~{need:.0f} s, {budget_s - elapsed:.0f} s left")
        print(f"bench: {mode} batch {batch} skipped ({phase['why']})", flush=True)
        return phase
    print(f"bench: {mode} batch {batch} ...", flush=True)
    t = time.perf_counter()
    try:
        runner, loaded = models.get()
        result = measure(
            loaded,
            runner,
            [batch],
            warmup_ms=warmup_ms,
            duration_s=duration_s,
            check_outputs=True,
            names=models.paths,
        )
    except BadInput as e:  # the correctness gate: nothing was timed
        phase.update(status="failed", why=str(e), seconds=round(time.perf_counter() - t, 1))
    except Exception as e:  # a crash in one mode (e.g. the compiler) must not lose the rest
        why = models.failure or f"{type(e).__name__}: {one_line(e)}"
        phase.update(status="error", why=why, seconds=round(time.perf_counter() - t, 1))
    else:
        phase.update(status="done", seconds=round(time.perf_counter() - t, 1))
        phase["output_check"] = result["environment"].get("output_check", [])
        phase["backend"] = result["environment"]["backend"]
        phase["warnings"] = result["environment"]["warnings"]
        report["environment"] = report["environment"] or result["environment"]
        phase["result"] = result
        print(format_table(result), flush=True)
    if phase["status"] != "done":
        print(f"bench: {mode} batch {batch} {phase['status']}: {phase['why']}", flush=True)
    return phase


def summary(report: dict) -> str:
    lines = [
        f"{'model':<8} {'mode':<8} {'batch':>5} {'median ms':>10} {'items/s':>10} {'speedup':>8} {'bound':>6} {'of bound':>8}"
    ]
    for r in report["table"]:
        bound = f"{r['flop_bound']:.2f}x" if r["flop_bound"] else "-"
        of = f"{r['of_bound']:.2f}" if r["of_bound"] is not None else "-"
        lines.append(
            f"{r['model']:<8} {r['mode']:<8} {r['batch']:>5} {r['median_ms']:>10.3f} "
            f"{r['throughput']:>10.1f} {r['speedup']:>7.2f}x {bound:>6} {of:>8}"
        )
    if report["missing"]:
        lines.append(f"missing models: {', '.join(report['missing'])} (see prepare.json)")
    lines.append(f"inputs: {report.get('inputs', 'one batch replayed')}")
    lines.append(
        f"goal: {report['goal']['what']}: {'met' if report['goal']['met'] else 'not met'} {report['goal']['measured']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, required=True, help="prepare.py's --out folder")
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
    parser.add_argument("--budget-s", type=float, default=200.0, help="wall-clock budget")
    parser.add_argument("--modes", default=",".join(MODES), help="eager,compiled")
    parser.add_argument("--warmup-ms", type=float, default=300.0)
    parser.add_argument("--duration-s", type=float, default=1.0)
    parser.add_argument(
        "--dry-run", action="store_true", help="torch-cpu, batches 1,2, tiny timings"
    )
    args = parser.parse_args(argv)
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print(
                "bench: torch sees no CUDA device; use --dry-run on a CPU machine", file=sys.stderr
            )
            return 2
    report = run(args)
    return 0 if all(p["status"] in ("done", "skipped") for p in report["phases"]) else 1


if __name__ == "__main__":
    sys.exit(main())
