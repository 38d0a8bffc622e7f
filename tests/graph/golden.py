"""Golden outputs of the channel engine: prove that a refactoring changes no byte it writes.

A pytest plugin records, while the suite runs, every graph the suite slims or costs (the ONNX
model saved under ``DIR/cases/``, the plan, ``round_to``) with a sha256 of the result (the
slim.onnx bytes, the applied plan, the coupled layers; or the error), and a sha256 of every
group analysis, in the order each test asks for them::

    CHASE_GOLDEN_DIR=/tmp/before python -m pytest -q -p tests.graph.golden   # on the old tree
    python -m tests.graph.golden replay /tmp/before     # the saved cases through this tree
    CHASE_GOLDEN_DIR=/tmp/after python -m pytest -q -p tests.graph.golden    # on the new tree
    python -m tests.graph.golden compare /tmp/before /tmp/after [OLD=NEW ...]  # test by test

Analyses are compared per test rather than by their input graph: an exported graph carries
source paths (which differ between two checkouts) and some tests draw unseeded weights, while
the groups depend on neither. ``replay`` and ``compare`` exit 1 on any difference. Recording an
older tree that still has the pre-``graph/`` layout needs its own copy of this plugin pointed at
that layout's module names.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import onnx


def _sha(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def _bytes(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString(deterministic=True)


def slim_value(result) -> str:
    return _sha(
        _bytes(result.model),
        json.dumps(result.plan.to_dict(), sort_keys=True),
        json.dumps(result.coupled),
    )


def costs_value(costs) -> str:
    return _sha(repr(costs))


# -- recording (the pytest plugin) -----------------------------------------------------------


def _dir() -> Path | None:
    path = os.environ.get("CHASE_GOLDEN_DIR")
    return Path(path) if path else None


def _record(**fields) -> None:
    fields["test"] = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
    with open(_dir() / "records.jsonl", "a") as f:
        f.write(json.dumps(fields) + "\n")


def _save(model: onnx.ModelProto) -> str:
    data = _bytes(model)
    sha = _sha(data)
    path = _dir() / "cases" / f"{sha}.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return sha


def pytest_configure(config) -> None:
    """Wrap the engine's entry points before any test module imports them."""
    if _dir() is None:
        return
    _dir().mkdir(parents=True, exist_ok=True)
    from chase_deploy.graph import analysis, flops, surgery

    slim_model, layer_costs = surgery.slim_model, flops.layer_costs

    def recorded_slim(model, plan, round_to=1):
        fields = {"kind": "slim", "model": _save(model), "plan": plan.to_dict()}
        fields["round_to"] = round_to
        try:
            result = slim_model(model, plan, round_to)
        except Exception as e:
            _record(**fields, value=f"{type(e).__name__}: {e}")
            raise
        _record(**fields, value=slim_value(result))
        return result

    def recorded_costs(model):
        costs = layer_costs(model)
        _record(kind="costs", model=_save(model), value=costs_value(costs))
        return costs

    surgery.slim_model, flops.layer_costs = recorded_slim, recorded_costs
    cls = analysis.ChannelAnalysis
    init, groups = cls.__init__, cls.groups

    def recorded_init(self, proto, model, sample_shape):
        try:
            init(self, proto, model, sample_shape)
        except Exception as e:
            _record(kind="analysis", value=f"{type(e).__name__}: {e}")
            raise

    def recorded_groups(self, prune_skip=False):
        result = groups(self, prune_skip)
        _record(kind="groups", value=_sha(json.dumps(result.to_dict(), sort_keys=True)))
        return result

    cls.__init__, cls.groups = recorded_init, recorded_groups


# -- checking ---------------------------------------------------------------------------------


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in open(folder / "records.jsonl")]


def replay(folder: Path) -> int:
    """Run every recorded slim and FLOP case through this tree; the number that differ."""
    from chase_deploy.graph.flops import layer_costs
    from chase_deploy.graph.surgery import slim_model
    from train.plan import parse_plan

    cases: dict[tuple, set[str]] = defaultdict(set)
    for r in _records(folder):
        if r["kind"] in ("slim", "costs"):
            plan = json.dumps(r.get("plan"), sort_keys=True)
            cases[(r["kind"], r["model"], plan, r.get("round_to"))].add(r["value"])
    same: dict[str, int] = defaultdict(int)
    differ = 0
    for (kind, sha, plan, round_to), values in sorted(cases.items()):
        model = onnx.load(str(folder / "cases" / f"{sha}.onnx"))
        try:
            if kind == "slim":
                value = slim_value(slim_model(model, parse_plan(json.loads(plan)), round_to))
            else:
                value = costs_value(layer_costs(model))
        except Exception as e:  # noqa: BLE001 - a refusal is a recorded result too
            value = f"{type(e).__name__}: {e}"
        if values == {value}:
            same[kind] += 1
        else:
            differ += 1
            print(f"DIFF {kind} {sha[:12]} round_to={round_to}: {sorted(values)} -> {value}")
    print(f"replayed: identical {dict(same)}, different {differ}")
    return differ


def compare(before: Path, after: Path, renamed: dict[str, str] | None = None) -> int:
    """Compare, test by test, the analyses of two recorded runs (``renamed`` maps an old test
    file to its new path); the number of tests whose analyses differ."""
    renamed = renamed or {}

    def load(folder: Path) -> dict[str, list[str]]:
        found: dict[str, list[str]] = defaultdict(list)
        for r in _records(folder):
            if r["kind"] in ("groups", "analysis"):
                path, _, name = r["test"].partition("::")
                found[f"{renamed.get(path, path)}::{name}"].append(r["value"])
        return found

    a, b = load(before), load(after)
    shared = sorted(set(a) & set(b))
    differ = [t for t in shared if a[t] != b[t]]
    for test in differ:
        print(f"DIFF {test}: {len(a[test])} analyses before, {len(b[test])} after")
    print(
        f"analyses of {len(shared) - len(differ)} tests identical, {len(differ)} different; "
        f"{len(set(a) - set(b))} tests only before, {len(set(b) - set(a))} only after"
    )
    return len(differ)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "replay":
        sys.exit(1 if replay(Path(args[0])) else 0)
    moves = dict(a.split("=", 1) for a in args[2:])  # OLD_TEST_FILE=NEW_TEST_FILE
    sys.exit(1 if compare(Path(args[0]), Path(args[1]), moves) else 0)
