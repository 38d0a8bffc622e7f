"""A plain MLP (flatten, hidden Linear + BN + ReLU layers, classifier)."""

from __future__ import annotations

from torch import Tensor, nn

from train.models.registry import register_model


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: list[int], num_classes: int) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.hidden = nn.ModuleList()
        self.norms = nn.ModuleList()
        width = in_features
        for h in hidden:
            self.hidden.append(nn.Linear(width, h))
            self.norms.append(nn.BatchNorm1d(h))
            width = h
        self.relu = nn.ReLU()
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.flatten(x)
        for linear, norm in zip(self.hidden, self.norms, strict=True):
            x = self.relu(norm(linear(x)))
        return self.fc(x)


@register_model
def mlp(
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: int = 28,
    hidden: list[int] | None = None,
) -> MLP:
    return MLP(in_channels * input_size * input_size, list(hidden or [256, 128]), num_classes)
