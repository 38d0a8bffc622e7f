"""Tiny PyTorch models for the ``.pt2`` and torch-backend tests, and a hand-made physical slice.

``masked_net`` is a conv -> BN -> ReLU -> conv -> BN -> ReLU -> pool -> Linear net whose first
conv has some output channels masked the way Chase leaves them (rows and the consumer's columns
zero); ``sliced_by_hand`` is the same net with those channels physically removed, built by hand
for this one architecture (the general slicer is ``train/slicing.py``'s job).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from chase_deploy import torch_export
from train.atomic import write_bytes


class Net(nn.Module):
    def __init__(self, width: int = 8, hidden: int | None = None, classes: int = 5):
        super().__init__()
        hidden = hidden if hidden is not None else width
        self.conv1 = nn.Conv2d(3, hidden, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def masked_net(width: int = 8, dropped=(1, 4, 6), seed: int = 0) -> Net:
    """``Net`` in eval mode with non-trivial BN statistics and ``dropped`` channels of conv1
    masked: conv1's rows and conv2's columns zero (BN1 stays dense, as training leaves it)."""
    torch.manual_seed(seed)
    net = Net(width)
    with torch.no_grad():
        for bn in (net.bn1, net.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.bias.uniform_(-0.3, 0.3)
        net.conv1.weight[list(dropped)] = 0
        net.conv2.weight[:, list(dropped)] = 0
    return net.eval()


def sliced_by_hand(masked: Net, kept) -> Net:
    """``masked`` with only conv1's channels ``kept`` (conv1 rows, BN1, conv2 columns)."""
    kept = list(kept)
    out = Net(masked.conv2.out_channels, hidden=len(kept), classes=masked.fc.out_features)
    with torch.no_grad():
        out.conv1.weight.copy_(masked.conv1.weight[kept])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(out.bn1, name).copy_(getattr(masked.bn1, name)[kept])
        out.conv2.weight.copy_(masked.conv2.weight[:, kept])
        out.bn2.load_state_dict(masked.bn2.state_dict())
        out.fc.load_state_dict(masked.fc.state_dict())
    return out.eval()


def write_pt2(path: Path, model: nn.Module, shape=(2, 3, 8, 8)) -> Path:
    write_bytes(path, torch_export.dense_program(model, shape).data)
    return path


def dense_and_slim(folder: Path, dropped=(1, 4, 6)) -> dict:
    """dense.pt2 (the masked net) and slim.pt2 (sliced by hand) in ``folder``: equal outputs,
    fewer channels; with the masked net itself."""
    masked = masked_net(dropped=dropped)
    kept = [c for c in range(8) if c not in dropped]
    dense = write_pt2(folder / "dense.pt2", masked)
    slim = write_pt2(folder / "slim.pt2", sliced_by_hand(masked, kept))
    return {"dense": dense, "slim": slim, "masked": masked}


def _conv(conv: nn.Conv2d, rows=None, cols=None) -> nn.Conv2d:
    weight = conv.weight.detach()
    weight = weight[rows] if rows is not None else weight
    weight = weight[:, cols] if cols is not None else weight
    new = nn.Conv2d(
        weight.shape[1], weight.shape[0], conv.kernel_size, conv.stride, conv.padding, bias=False
    )
    with torch.no_grad():
        new.weight.copy_(weight)
    return new


def _norm(bn: nn.BatchNorm2d, kept) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(len(kept), eps=bn.eps)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(new, name).copy_(getattr(bn, name)[kept])
    return new
