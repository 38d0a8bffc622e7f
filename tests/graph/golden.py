"""Golden outputs of the channel engine: prove that a refactoring changes no byte it writes.

A pytest plugin records, while the suite runs, every graph the suite slims or costs (the ONNX
model saved under ``DIR/cases/``, the plan, ``round_to``) with a sha256 of the result (the
slim.onnx bytes, the applied plan, the coupled layers; or the error), and a sha256 of every
group analysis keyed by the graph's structure (initializer values left out: groups do not depend
on them, and some tests draw unseeded weights)::

    CHASE_GOLDEN_DIR=/tmp/before python -m pytest -q -p tests.graph.golden   # on the old tree
    python -m tests.graph.golden replay /tmp/before     # the saved cases through this tree
    CHASE_GOLDEN_DIR=/tmp/after python -m pytest -q -p tests.graph.golden    # on the new tree
    python -m tests.graph.golden compare /tmp/before /tmp/after   # the analyses of both runs

``replay`` and ``compare`` exit 1 on any difference. Recording an older tree that still has the
pre-``graph/`` layout needs its own copy of this plugin pointed at that layout's module names.
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


def structure(model: onnx.ModelProto) -> bytes:
    """The model without its floating-point initializer values."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
    for init in copy.graph.initializer:
        if init.data_type in (*floats, onnx.TensorProto.DOUBLE):
            for name in ("raw_data", "float_data", "double_data", "int32_data"):
                init.ClearField(name)
    return _bytes(copy)


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
        self._golden_key = _sha(structure(proto), str(model), sample_shape)
        try:
            init(self, proto, model, sample_shape)
        except Exception as e:
            _record(kind="analysis", key=self._golden_key, value=f"{type(e).__name__}: {e}")
            raise

    def recorded_groups(self, prune_skip=False):
        result = groups(self, prune_skip)
        value = _sha(json.dumps(result.to_dict(), sort_keys=True))
        _record(kind="groups", key=_sha(self._golden_key, prune_skip), value=value)
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


def compare(before: Path, after: Path) -> int:
    """Compare the analyses two recorded runs share; the number of keys that differ."""

    def load(folder: Path) -> dict[tuple, set[str]]:
        found: dict[tuple, set[str]] = defaultdict(set)
        for r in _records(folder):
            if r["kind"] in ("groups", "analysis"):
                found[(r["kind"], r["key"])].add(r["value"])
        return found

    a, b = load(before), load(after)
    shared = sorted(set(a) & set(b))
    differ = [k for k in shared if a[k] != b[k]]
    for kind, key in differ:
        print(f"DIFF {kind} {key[:12]}: {sorted(a[(kind, key)])} -> {sorted(b[(kind, key)])}")
    print(
        f"analyses: {len(shared) - len(differ)} identical, {len(differ)} different; "
        f"{len(set(a) - set(b))} only before, {len(set(b) - set(a))} only after"
    )
    return len(differ)


if __name__ == "__main__":
    command, *folders = sys.argv[1:]
    paths = [Path(f) for f in folders]
    sys.exit(1 if (replay(*paths) if command == "replay" else compare(*paths)) else 0)
