"""The "your own loop" API: the README example, run as written on a small MobileNetV2 with
squeeze-excitation, ends in a checkpoint that ``slim`` turns into a verified smaller model."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from chase_deploy.library import Chase, ChaseConfig, channel_groups, save_checkpoint, slice_model
from chase_deploy.slim import slim_checkpoint
from train.checkpoint import load_checkpoint
from train.density import round_half_up
from train.models import create_model


def test_own_loop_to_slim(tmp_path) -> None:
    torch.manual_seed(0)
    model = create_model("own_models:mobilenet_v2_se", num_classes=4, width=8)
    groups = channel_groups(model, (3, 16, 16))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    cfg = ChaseConfig(density=0.5, channel_sparsity=0.5, update_every=2, channel_every=2)
    chase = Chase(model, groups, cfg, opt, steps_per_epoch=4, epochs=3, explore_until=2)
    data = torch.Generator().manual_seed(1)
    step = 0
    for _ in range(3):
        for _ in range(4):
            x, y = (
                torch.randn(8, 3, 16, 16, generator=data),
                torch.randint(0, 4, (8,), generator=data),
            )
            step += 1
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            chase.before_step(step)
            opt.step()
            chase.after_step(step)
    kept = sum(chase.widths().values())
    assert kept == round_half_up(chase.channels_total * 0.5)  # the exact count
    path = tmp_path / "final.pt"
    save_checkpoint(
        path,
        model,
        chase,
        model_name="own_models:mobilenet_v2_se",
        model_kwargs={"num_classes": 4, "width": 8},
        sample_shape=(3, 16, 16),
        epoch=3,
        groups=groups,
    )
    ckpt = load_checkpoint(path)
    assert ckpt["progress"] == {"epoch": 3, "step": 12}
    assert ckpt["channel_groups"] == groups.to_dict() and ckpt["state_dict_versions"][""] == 1
    report = slim_checkpoint(path, tmp_path / "slim", round_to=8)
    assert report["lossless"] and report["plan"]["pruned"] > 0
    # The same plan shrinks the PyTorch model itself.
    small = copy.deepcopy(model).eval()
    slice_model(small, groups, chase.channel_plan())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model.eval()(x), atol=1e-5, rtol=1e-4)
