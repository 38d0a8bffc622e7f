"""Time dense / slim / slim --round-to 8 ResNet-50 (.pt2 from prepare.py) with PyTorch on the GPU.

    python tests/gpu/bench_resnet50.py --prepared DIR --out OUT/bench.json [--budget-s S] [--dry-run]

Backend ``torch-cuda`` (``--dry-run``: ``torch-cpu`` with tiny timings), bf16, channels_last,
batches 1, 32 and 256 (dry run: 1 and 2), first eager, then ``torch.compile``. Every phase is
one ``chase_deploy.bench.benchmark`` call for one mode and batch size: the models interleaved,
CUDA events around CUDA-graph replays, and ``check_outputs``: before anything is timed the slim
models must give the dense model's outputs on the same inputs (bf16 tolerance), or the phase
fails and nothing is timed. Compiled phases run batch 256 first (the goal's batch size).

The whole run fits ``--budget-s``: before each phase the time it will need is estimated from
the last phase of the same mode, and phases that do not fit are skipped and listed as such.
The JSON is rewritten after every phase, so a run cut short still leaves its numbers.

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

from chase_deploy.bench import benchmark, format_table  # noqa: E402
from train.atomic import write_json  # noqa: E402
from train.errors import BadInput, one_line  # noqa: E402

MODELS = ("dense", "slim", "slim_r8")
BATCHES = (1, 32, 256)
DRY_BATCHES = (1, 2)
MODES = ("eager", "compiled")
GOAL_BATCH, GOAL_MODEL, GOAL_FRACTION = 256, "slim_r8", 0.9
FIRST_COMPILE_S = 75.0  # assumed cost of the first compiled phase (three compilations)
MARGIN_S = 5.0


def plan_phases(modes, batches) -> list[tuple[str, int]]:
    """(mode, batch) in run order: eager small to large, compiled from the goal's batch down."""
    phases = []
    for mode in modes:
        order = sorted(batches) if mode == "eager" else sorted(batches, reverse=True)
        phases.extend((mode, b) for b in order)
    return phases


def estimate_s(mode: str, done: list[dict]) -> float:
    """Seconds the next phase of ``mode`` will likely take: the longest finished one of that
    mode, or a guess for a first compiled phase."""
    seconds = [p["seconds"] for p in done if p["mode"] == mode and p["status"] == "done"]
    if seconds:
        return max(seconds)
    return FIRST_COMPILE_S if mode == "compiled" else 0.0


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
        "what": "PyTorch (eager / torch.compile) on .pt2 programs, bf16, channels_last; not TensorRT",
        "backend": backend,
        "models": {m: prepared["models"][m] for m in MODELS if m in prepared["models"]},
        "missing": [m for m in MODELS if m not in available],
        "input_shape": prepared["input_shape"],
        "budget_s": args.budget_s,
        "phases": [],
        "table": [],
        "environment": None,
    }
    for mode, batch in plan_phases(modes, batches):
        elapsed = time.perf_counter() - start
        need = estimate_s(mode, report["phases"])
        phase = {"mode": mode, "batch": batch}
        if elapsed + need + MARGIN_S > args.budget_s:
            phase.update(
                status="skipped", why=f"needs ~{need:.0f} s, {args.budget_s - elapsed:.0f} s left"
            )
            report["phases"].append(phase)
            print(f"bench: {mode} batch {batch} skipped ({phase['why']})", flush=True)
            continue
        print(f"bench: {mode} batch {batch} ...", flush=True)
        t = time.perf_counter()
        try:
            result = benchmark(
                paths,
                backend=backend,
                batches=[batch],
                warmup_ms=warmup_ms,
                duration_s=duration_s,
                options={"precision": "bf16", "channels_last": True, "compile": mode == "compiled"},
                check_outputs=True,
            )
        except BadInput as e:  # the correctness gate (or a refused setting): nothing was timed
            phase.update(status="failed", why=str(e), seconds=round(time.perf_counter() - t, 1))
        except Exception as e:  # a crash in one mode (e.g. the compiler) must not lose the rest
            why = f"{type(e).__name__}: {one_line(e)}"
            phase.update(status="error", why=why, seconds=round(time.perf_counter() - t, 1))
        else:
            phase.update(status="done", seconds=round(time.perf_counter() - t, 1))
            phase["output_check"] = result["environment"].get("output_check", [])
            phase["backend"] = result["environment"]["backend"]
            phase["warnings"] = result["environment"]["warnings"]
            report["environment"] = report["environment"] or result["environment"]
            report["table"].extend(table_rows(result, names, mode, bounds))
            print(format_table(result), flush=True)
        report["phases"].append(phase)
        if phase["status"] != "done":
            print(f"bench: {mode} batch {batch} {phase['status']}: {phase['why']}", flush=True)
        report["goal"] = goal(report["table"])
        report["seconds"] = round(time.perf_counter() - start, 1)
        write_json(args.out, report)
    report["complete"] = not report["missing"] and all(
        p["status"] == "done" for p in report["phases"]
    )
    report["goal"] = goal(report["table"])
    report["seconds"] = round(time.perf_counter() - start, 1)
    write_json(args.out, report)
    print(summary(report), flush=True)
    return report


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
