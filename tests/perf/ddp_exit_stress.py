"""Do finished 2-process jobs exit 0 every time, even on a loaded machine?

    python tests/perf/ddp_exit_stress.py [--runs 20] [--hogs 2] [--set train.epochs=4 ...]

Runs the quickstart recipe under `torchrun --nproc_per_node 2` (gloo, CPU, one thread per
process) RUNS times, one after another, while HOGS busy-looping processes compete for the cores,
and counts the runs in which torchrun and every worker exited 0 with final.pt written. A failed run
keeps its log under the printed directory. `--set` overrides recipe keys as `chase-deploy train
--set` does (e.g. fewer epochs for a quicker pass); by default the recipe is run unchanged.

Not collected by pytest (no test functions): it takes minutes and only means something in bulk.
The target is RUNS/RUNS clean exits.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"


def _hog() -> None:
    while True:
        pass


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    return env


def _one_run(recipe: Path, out: Path, overrides: list[str]) -> tuple[bool, str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "chase_deploy", "train", str(recipe), "--out", str(out), "--device", "cpu"]
    for item in overrides:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    clean = proc.returncode == 0 and (out / "final.pt").is_file()
    return clean, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def _cause(log: str) -> str:
    """The worker's own error line, else the launcher's exit line."""
    lines = log.strip().splitlines()
    for marker in ("error:", "terminate called", "exitcode"):
        found = [line for line in lines if marker in line]
        if found:
            return found[0].strip()
    return lines[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--hogs", type=int, default=2, help="busy-looping processes beside the job")
    parser.add_argument("--recipe", type=Path, default=QUICKSTART)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ddp-exit-stress-"))
    hogs = [multiprocessing.Process(target=_hog, daemon=True) for _ in range(args.hogs)]
    for h in hogs:
        h.start()
    clean = 0
    started = time.perf_counter()
    try:
        for i in range(1, args.runs + 1):
            out = work / f"run{i:02d}"
            ok, log = _one_run(args.recipe, out, args.overrides)
            if ok:
                clean += 1
                shutil.rmtree(out, ignore_errors=True)
            else:
                out.mkdir(parents=True, exist_ok=True)
                (out / "torchrun.log").write_text(log)
            print(f"run {i}/{args.runs}: {'clean' if ok else 'FAILED: ' + _cause(log)}", flush=True)
    finally:
        for h in hogs:
            h.terminate()
    minutes = (time.perf_counter() - started) / 60
    print(
        f"{clean}/{args.runs} clean exits ({args.hogs} CPU hogs, {minutes:.1f} min); "
        f"failed runs' logs under {work}"
    )
    sys.exit(0 if clean == args.runs else 1)


if __name__ == "__main__":
    main()
