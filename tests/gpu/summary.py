"""Gather one GPU check's results into ``$OUT/check.json`` and print the table.

    python tests/gpu/summary.py --out OUT --seconds N [--dry-run]

Reads what the steps of ``check.sh`` left in OUT: ``steps.tsv`` (name, exit code, seconds),
``gpu_tests.xml`` (pytest's JUnit report), ``prepare.json`` and ``bench.json``. ``status`` is

- ``failed``: a needed module did not import, ``prepare`` failed, there is no ``bench.json``,
  the benchmark failed (a gate or a crash: exit 1), or a GPU test failed or errored (an error is
  a broken fixture or a module that does not import: as bad as a failure);
- ``incomplete``: nothing failed but something is missing: the benchmark or the tests ran out
  of time (``timeout``'s exit 124, or 137 after its kill; the finished phases are in
  ``bench.json``), no test report, a model the slicer could not make, a phase beyond the budget;
- ``ok``: every step ran and passed and all three models were timed in every phase.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from train.atomic import write_json  # noqa: E402


def read_steps(path: Path) -> list[dict]:
    steps = []
    if path.is_file():
        for line in path.read_text().splitlines():
            name, rc, seconds = (line.split("\t") + ["", "", ""])[:3]
            steps.append(
                {
                    "name": name,
                    "exit": int(rc) if rc.lstrip("-").isdigit() else rc,
                    "seconds": int(seconds or 0),
                }
            )
    return steps


def read_junit(path: Path) -> dict | None:
    if not path.is_file():
        return None
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {
        k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")
    }
    cases = []
    for case in root.iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            child = case.find(tag)
            if child is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                detail = (child.get("message") or "").splitlines()[:1]
                break
        else:
            detail = []
        cases.append(
            {
                "test": f"{case.get('classname')}::{case.get('name')}",
                "outcome": outcome,
                "detail": detail[0] if detail else "",
            }
        )
    counts["passed"] = sum(1 for c in cases if c["outcome"] == "passed")
    counts["cases"] = [c for c in cases if c["test"] and not c["test"].startswith("::")]
    return counts


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


TIMED_OUT = (124, 137)  # timeout's exit codes: the limit was reached (137: killed after it)


def status(steps: list[dict], tests: dict | None, bench: dict | None) -> str:
    ran = {s["name"]: s["exit"] for s in steps}
    if ran.get("imports", 0) != 0 or ran.get("prepare") != 0 or bench is None:
        return "failed"
    if ran.get("bench") not in (0, *TIMED_OUT):
        return "failed"
    if tests is not None and (tests["failures"] or tests["errors"]):
        return "failed"
    if ran.get("gpu_tests") not in (0, *TIMED_OUT) and tests is not None:
        return "failed"  # pytest failed in a way its report does not show (usage, internal)
    if ran.get("bench") in TIMED_OUT or tests is None or not bench.get("complete"):
        return "incomplete"
    return "ok"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    steps = read_steps(args.out / "steps.tsv")
    tests = read_junit(args.out / "gpu_tests.xml")
    prepare = read_json(args.out / "prepare.json")
    bench = read_json(args.out / "bench.json")
    check = {
        "format": "chase-gpu-check",
        "dry_run": args.dry_run,
        "seconds": args.seconds,
        "status": status(steps, tests, bench),
        "steps": steps,
        "gpu_tests": tests,
        "prepare": prepare,
        "bench": bench,
    }
    write_json(args.out / "check.json", check)
    print(
        f"== GPU check {check['status']} in {args.seconds} s ({'dry run' if args.dry_run else 'GPU'})"
    )
    for s in steps:
        print(f"   {s['name']:<10} exit {s['exit']!s:<10} {s['seconds']:>4} s")
    if tests is not None:
        print(
            f"   gpu tests: {tests['passed']} passed, {tests['failures']} failed, "
            f"{tests['errors']} errors, {tests['skipped']} skipped"
        )
    if bench is not None:
        from bench_resnet50 import summary

        print(summary(bench))
    return 0 if check["status"] != "failed" else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
