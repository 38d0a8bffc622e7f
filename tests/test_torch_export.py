"""``.pt2`` programs: torch.export round trip, no pickles, loads without the model's source,
verified against the masked model; the hook for the physically sliced model."""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from chase_deploy import torch_export
from chase_deploy.backends.modelfile import inspect_model_file
from chase_deploy.graph.analysis import derive_groups
from tests.torch_models import masked_net, sliced_by_hand, write_pt2
from train.errors import BadInput
from train.plan import parse_plan

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (2, 3, 8, 8)
DROPPED = (1, 4, 6)
KEPT = [c for c in range(8) if c not in DROPPED]

MODEL_SOURCE = """
import torch
from torch import nn


class Private(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean(dim=(2, 3)))
"""


def test_pt2_loads_without_the_models_source(tmp_path, monkeypatch):
    source = tmp_path / "src"
    source.mkdir()
    (source / "private_model_13.py").write_text(MODEL_SOURCE)
    monkeypatch.syspath_prepend(str(source))
    from private_model_13 import Private

    torch.manual_seed(0)
    model = Private().eval()
    path = write_pt2(tmp_path / "m.pt2", model)
    x = torch.randn(3, 3, 8, 8)
    np.save(tmp_path / "x.npy", x.numpy())
    with torch.no_grad():
        expected = model(x).numpy()
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import torch
        from chase_deploy.torch_export import load_pt2
        program = load_pt2({str(path)!r})
        x = torch.from_numpy(np.load({str(tmp_path / "x.npy")!r}))
        with torch.no_grad():
            np.save({str(tmp_path / "y.npy")!r}, program.module()(x).numpy())
        assert "private_model_13" not in sys.modules
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the project, not the model's folder
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-6)


def test_pt2_holds_no_pickle(tmp_path):
    path = write_pt2(tmp_path / "m.pt2", masked_net())
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert not [n for n in names if n.endswith((".pkl", ".pickle"))]
        (samples,) = [n for n in names if "/sample_inputs/" in n]
        assert archive.read(samples) == b""  # the example inputs were dropped, not pickled
        for name in names:
            if name.endswith("_config.json"):
                config = json.loads(archive.read(name))["config"]
                assert all(not entry.get("use_pickle", False) for entry in config.values())
            data = archive.read(name)
            if data.startswith(b"PK\x03\x04"):  # a nested torch.save archive would be a pickle
                assert not zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert inspect_model_file(path).kind == "pt2"


def test_dense_program_round_trip_and_inputs():
    program = torch_export.dense_program(masked_net(), SHAPE)
    check = program.verification
    assert check.lossless and check.max_abs_diff == 0.0 and check.batch_sizes == [1, 3, 2]
    loaded = torch_export.load_pt2(program.data)
    ((name, shape, dtype, largest),) = torch_export.program_inputs(loaded)
    assert (shape, dtype, largest) == (
        (None, 3, 8, 8),
        np.dtype(np.float32),
        torch_export.MAX_BATCH,
    )
    report = program.report("out/dense.pt2")
    assert report["path"] == "out/dense.pt2" and report["lossless"] is True
    assert len(report["sha256"]) == 64 and report["bytes"] == len(program.data)


def test_slim_program_accepts_a_physical_slice_and_refuses_a_wrong_one():
    masked = masked_net(dropped=DROPPED)
    good = torch_export.slim_program(sliced_by_hand(masked, KEPT), masked, SHAPE)
    assert good.verification.lossless
    assert len(good.data) < len(torch_export.dense_program(masked, SHAPE).data)
    wrong = sliced_by_hand(masked, [0, 1, 2, 3, 5])  # keeps a masked channel, drops a live one
    with pytest.raises(BadInput, match="differs from the reference model"):
        torch_export.slim_program(wrong, masked, SHAPE)


def test_physically_slim_cuts_the_plans_channels_and_slim_pt2_matches():
    plan = parse_plan(
        {
            "format": "chase-channel-plan",
            "version": 1,
            "layers": {"conv1": {"out_channels": 8, "kept": KEPT}},
        }
    )
    masked = masked_net()
    groups = derive_groups(masked, SHAPE[1:])
    sliced = torch_export.physically_slim(copy.deepcopy(masked), plan, groups)
    assert sliced.conv1.out_channels == len(KEPT) and sliced.bn1.num_features == len(KEPT)
    assert sliced.conv2.in_channels == len(KEPT)
    by_hand = sliced_by_hand(masked, KEPT)
    for name, value in by_hand.state_dict().items():
        assert torch.equal(sliced.state_dict()[name], value), name
    program, why = torch_export.slim_from_plan(masked, plan, SHAPE, groups)
    assert why == "" and program.verification.lossless


def test_a_pruned_layer_no_group_holds_is_named_and_slim_pt2_is_skipped():
    plan = parse_plan(
        {
            "format": "chase-channel-plan",
            "version": 1,
            "layers": {"conv2": {"out_channels": 8, "kept": KEPT}},  # read by the pooled head
        }
    )
    masked = masked_net()
    groups = derive_groups(masked, SHAPE[1:], prune_skip=True)
    with pytest.raises(ValueError, match="plan layer 'conv2' is in no channel group"):
        torch_export.physically_slim(copy.deepcopy(masked), plan, groups)
    program, why = torch_export.slim_from_plan(masked, plan, SHAPE, groups)
    assert program is None and why.startswith("slim.pt2 not written: plan layer 'conv2'")


def test_load_pt2_refuses_what_is_not_a_program(tmp_path):
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a zip")
    with pytest.raises(BadInput, match="junk.pt2 is not a torch.export program"):
        torch_export.load_pt2(junk)
    with pytest.raises(BadInput, match="no such .pt2 file"):
        torch_export.load_pt2(tmp_path / "missing.pt2")
