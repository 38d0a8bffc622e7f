"""Channel plan parsing (the contract) and rounding."""

from __future__ import annotations

import json

import numpy as np
import pytest

from train.errors import BadInput
from train.plan import LayerPlan, load_plan, parse_plan
from train.rounding import round_kept


def plan(**layers):
    return {"format": "chase-channel-plan", "version": 1, "layers": layers}


def test_valid_plan_round_trips(tmp_path):
    obj = plan(**{"layer1.0.conv1": {"out_channels": 64, "kept": [0, 2, 3, 5]}})
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(obj))
    parsed = load_plan(path)
    assert parsed.layers["layer1.0.conv1"] == LayerPlan(64, (0, 2, 3, 5))
    assert parsed.layers["layer1.0.conv1"].pruned
    assert parsed.to_dict() == obj


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([], "not a channel plan"),
        ({"format": "other", "version": 1, "layers": {}}, "not a channel plan"),
        ({"format": "chase-channel-plan", "version": 9, "layers": {}}, "newer"),
        ({"format": "chase-channel-plan", "version": 1, "layers": []}, '"layers" must map'),
        (plan(a={"out_channels": 0, "kept": [0]}), "out_channels must be a positive integer"),
        (plan(a={"out_channels": 4, "kept": "0,1"}), "kept must be a list"),
        (plan(a={"out_channels": 4, "kept": []}), "kept is empty"),
        (plan(a={"out_channels": 4, "kept": [1, 1]}), "channel 1 twice"),
        (plan(a={"out_channels": 4, "kept": [0, 4]}), "index 4 is out of range [0, 4)"),
        (plan(a={"out_channels": 4, "kept": [-1, 0]}), "index -1 is out of range"),
        (plan(a={"out_channels": 4, "kept": [2, 1]}), "sorted"),
        (plan(a={"out_channels": 4, "kept": [True]}), "kept must be a list"),
    ],
)
def test_malformed_plans_are_bad_input(obj, message):
    with pytest.raises(BadInput) as err:
        parse_plan(obj)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unreadable_plan_files(tmp_path):
    bad = tmp_path / "plan.json"
    bad.write_text("{not json")
    with pytest.raises(BadInput, match="not JSON"):
        load_plan(bad)
    with pytest.raises(BadInput, match="no such file"):
        load_plan(tmp_path / "missing.json")


def test_round_kept_adds_best_scored_channels_up_to_a_multiple():
    scores = np.array([0, 5, 0, 1, 9, 0, 0, 2, 0, 0], float)
    assert round_kept((0, 2), 10, 4, scores) == (0, 1, 2, 4)
    assert round_kept((0, 1, 2, 3), 10, 4, scores) == (0, 1, 2, 3)  # already aligned
    assert round_kept((0, 1, 2, 3, 4, 5, 6, 7, 8), 10, 8, scores) == tuple(range(10))  # capped
    assert round_kept((3,), 10, 1, scores) == (3,)
    assert round_kept((9,), 10, 3, np.zeros(10)) == (0, 1, 9)  # ties: lower index first
