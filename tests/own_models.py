"""Small networks that copy the graph structure of real CNN families, written the way a user
writes their own model: plain ``nn.Module`` code, nothing chase-deploy specific.

The "your own model" tests load them through recipes as ``own_models:NAME`` (an import path,
the working directory importable), train them with Chase, slim them, and slice them in PyTorch.
Every factory takes ``num_classes``, ``in_channels`` and ``width``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)
    )


class SqueezeExcite(nn.Module):
    """Global pool, 1x1 reduce, ReLU, 1x1 expand, sigmoid, multiplied into the input."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


# -- MobileNetV2 with squeeze-excitation ---------------------------------------------------------


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int, se: bool) -> None:
        super().__init__()
        hidden = cin * expand
        self.residual = stride == 1 and cin == cout
        self.expand = (
            nn.Sequential(conv_bn(cin, hidden), nn.ReLU6()) if expand != 1 else nn.Identity()
        )
        self.dw = conv_bn(hidden, hidden, 3, stride, groups=hidden)
        self.se = SqueezeExcite(hidden, max(1, cin // 4)) if se else nn.Identity()
        self.project = conv_bn(hidden, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(F.relu6(self.dw(self.expand(x)))))
        return x + y if self.residual else y


class MobileNetV2SE(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: int) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(conv_bn(in_channels, w, 3), nn.ReLU6())
        self.blocks = nn.Sequential(
            InvertedResidual(w, w + w // 2, 1, 1, se=True),  # t=1: no expansion, no residual
            InvertedResidual(w + w // 2, w + w // 2, 1, 4, se=True),  # residual
            InvertedResidual(w + w // 2, 2 * w, 2, 4, se=False),
        )
        self.head = nn.Sequential(conv_bn(2 * w, 4 * w), nn.ReLU6())
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(4 * w, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(x.mean((2, 3)))


def mobilenet_v2_se(num_classes: int = 10, in_channels: int = 3, width: int = 8) -> nn.Module:
    return MobileNetV2SE(num_classes, in_channels, width)


# -- ResNet-18 ----------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet18(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(2)
        self.layer1 = nn.Sequential(BasicBlock(width, width, 1), BasicBlock(width, width, 1))
        self.layer2 = nn.Sequential(
            BasicBlock(width, 2 * width, 2), BasicBlock(2 * width, 2 * width, 1)
        )
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet18(num_classes: int = 10, in_channels: int = 3, width: int = 8) -> nn.Module:
    return ResNet18(num_classes, in_channels, width)


# -- DenseNet -----------------------------------------------------------------------------------


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))
        return torch.cat([x, y], 1)


class DenseNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: int) -> None:
        super().__init__()
        growth = width // 2
        self.conv0 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.block1 = nn.Sequential(DenseLayer(width, growth), DenseLayer(width + growth, growth))
        c = width + 2 * growth
        self.transition = nn.Sequential(
            nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, width, 1, bias=False), nn.AvgPool2d(2)
        )
        self.block2 = nn.Sequential(DenseLayer(width, growth), DenseLayer(width + growth, growth))
        self.norm = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.transition(self.block1(self.conv0(x))))
        return self.fc(F.relu(self.norm(x)).mean((2, 3)))


def densenet(num_classes: int = 10, in_channels: int = 3, width: int = 8) -> nn.Module:
    return DenseNet(num_classes, in_channels, width)


# -- ResNeXt ------------------------------------------------------------------------------------


class ResNeXtBlock(nn.Module):
    def __init__(self, cin: int, inner: int, cout: int, groups: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, inner)
        self.conv2 = conv_bn(inner, inner, 3, stride, groups=groups)
        self.conv3 = conv_bn(inner, cout)
        self.downsample = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNeXt(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: int) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(conv_bn(in_channels, w, 3), nn.ReLU())
        self.layer1 = nn.Sequential(
            ResNeXtBlock(w, 2 * w, 4 * w, 4, 1), ResNeXtBlock(4 * w, 2 * w, 4 * w, 4, 1)
        )
        self.layer2 = nn.Sequential(ResNeXtBlock(4 * w, 4 * w, 8 * w, 4, 2))
        self.fc = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer2(self.layer1(self.stem(x))).mean((2, 3)))


def resnext(num_classes: int = 10, in_channels: int = 3, width: int = 8) -> nn.Module:
    return ResNeXt(num_classes, in_channels, width)


# -- RegNetY ------------------------------------------------------------------------------------


class YBlock(nn.Module):
    """1x1, grouped 3x3 (group width 4), squeeze-excitation, 1x1, residual."""

    def __init__(self, cin: int, cout: int, stride: int, group_width: int = 4) -> None:
        super().__init__()
        self.a = nn.Sequential(conv_bn(cin, cout), nn.ReLU())
        self.b = nn.Sequential(
            conv_bn(cout, cout, 3, stride, groups=cout // group_width), nn.ReLU()
        )
        self.se = SqueezeExcite(cout, max(1, cout // 4))
        self.c = conv_bn(cout, cout)
        self.proj = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(self.se(self.b(self.a(x))))
        return F.relu(y + (x if self.proj is None else self.proj(x)))


class RegNetY(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: int) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(conv_bn(in_channels, w, 3, 2), nn.ReLU())
        self.s1 = nn.Sequential(YBlock(w, 2 * w, 1))
        self.s2 = nn.Sequential(YBlock(2 * w, 4 * w, 2), YBlock(4 * w, 4 * w, 1))
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.s2(self.s1(self.stem(x))).mean((2, 3)))


def regnety(num_classes: int = 10, in_channels: int = 3, width: int = 8) -> nn.Module:
    return RegNetY(num_classes, in_channels, width)


# -- ConvNeXt -----------------------------------------------------------------------------------


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (permute, normalize, permute back)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class CNBlock(nn.Module):
    """Depthwise 7x7, channels-last LayerNorm, Linear 4x, GELU, Linear, layer scale, residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: int) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 2, 2), LayerNorm2d(w))
        self.stage1 = nn.Sequential(CNBlock(w), CNBlock(w))
        self.down = nn.Sequential(LayerNorm2d(w), nn.Conv2d(w, 2 * w, 2, 2))
        self.stage2 = nn.Sequential(CNBlock(2 * w))
        self.norm = nn.LayerNorm(2 * w)
        self.head = nn.Linear(2 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(self.norm(x.mean((2, 3))))


def convnext(num_classes: int = 10, in_channels: int = 3, width: int = 8) -> nn.Module:
    return ConvNeXt(num_classes, in_channels, width)


ARCHITECTURES = ("mobilenet_v2_se", "resnet18", "densenet", "resnext", "regnety", "convnext")
