"""Small networks that copy the graph structure of real CNN families, written the way a user
writes their own model: plain ``nn.Module`` code, nothing chase-deploy specific.

The "your own model" tests load them through recipes as ``own_models:NAME`` (an import path,
the working directory importable), train them with Chase, slim them, and slice them in PyTorch.
Every factory takes ``num_classes``, ``in_channels`` and ``width``.
"""

from __future__ import annotations

import typing

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


# ==============================================================================================
# Patterns from real torchvision/timm families that once ended in an internal error or lost
# their budget (issue 20): each a structural copy, small enough to train in a second.


# -- MNASNet: state-dict version logic ----------------------------------------------------------


class MNASNet(nn.Module):
    """Depthwise-separable inverted residuals whose ``_load_from_state_dict`` needs the saved
    module version (as torchvision's MNASNet: version 1 checkpoints have another stem layout)."""

    _version = 2

    def __init__(self, num_classes: int, in_channels: int, width: int) -> None:
        super().__init__()
        w = width
        self.layers = nn.Sequential(
            conv_bn(in_channels, w, 3, 2),
            nn.ReLU(),
            conv_bn(w, w, 3, groups=w),  # depthwise
            nn.ReLU(),
            conv_bn(w, w // 2),
            InvertedResidual(w // 2, w, 2, 3, se=False),
            InvertedResidual(w, w, 1, 3, se=False),
            conv_bn(w, 4 * w),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(4 * w, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.layers(x).mean((2, 3)))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs) -> None:
        version = local_metadata.get("version", None)
        if version not in (1, 2):
            raise ValueError(f"version should be set to 1 or 2 instead of {version}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)


def mnasnet(num_classes: int = 10, in_channels: int = 3, width: int = 8) -> nn.Module:
    return MNASNet(num_classes, in_channels, width)


# -- GoogLeNet: auxiliary classifiers in training mode ------------------------------------------


class GoogLeNetOutputs(typing.NamedTuple):
    logits: torch.Tensor
    aux_logits2: torch.Tensor | None
    aux_logits1: torch.Tensor | None


class Inception(nn.Module):
    """Four branches (1x1; 1x1-3x3; 1x1-3x3; pool-1x1) concatenated along the channels."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pp: int) -> None:
        super().__init__()
        self.branch1 = nn.Sequential(conv_bn(cin, c1), nn.ReLU())
        self.branch2 = nn.Sequential(conv_bn(cin, c3r), nn.ReLU(), conv_bn(c3r, c3, 3), nn.ReLU())
        self.branch3 = nn.Sequential(conv_bn(cin, c5r), nn.ReLU(), conv_bn(c5r, c5, 3), nn.ReLU())
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, 1, 1, ceil_mode=True), conv_bn(cin, pp), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1, self.branch2, self.branch3, self.branch4)
        return torch.cat([b(x) for b in branches], 1)


class InceptionAux(nn.Module):
    def __init__(self, cin: int, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(conv_bn(cin, 16), nn.ReLU())
        self.fc1 = nn.Linear(16 * 2 * 2, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.adaptive_avg_pool2d(x, (2, 2)))
        return self.fc2(F.dropout(F.relu(self.fc1(torch.flatten(x, 1))), 0.5, self.training))


class GoogLeNet(nn.Module):
    """Inception blocks; in training mode two auxiliary classifiers on inner feature maps, and
    the forward returns ``GoogLeNetOutputs`` (logits, aux2, aux1), in eval mode the logits."""

    def __init__(self, num_classes: int, in_channels: int, width: int) -> None:
        super().__init__()
        w = width
        self.conv1 = nn.Sequential(conv_bn(in_channels, 2 * w, 3), nn.ReLU())
        self.inception3a = Inception(2 * w, w, w, 2 * w, w // 2, w, w)  # 5w channels
        self.maxpool = nn.MaxPool2d(2)
        self.inception4a = Inception(5 * w, 2 * w, w, 2 * w, w // 2, w, w)  # 6w
        self.inception4b = Inception(6 * w, 2 * w, w, 2 * w, w // 2, w, w)  # 6w
        self.aux1 = InceptionAux(6 * w, num_classes)
        self.aux2 = InceptionAux(6 * w, num_classes)
        self.fc = nn.Linear(6 * w, num_classes)

    def forward(self, x: torch.Tensor):
        x = self.maxpool(self.inception3a(self.conv1(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.training else None
        x = self.inception4b(x)
        aux2 = self.aux2(x) if self.training else None
        logits = self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        if self.training:
            return GoogLeNetOutputs(logits, aux2, aux1)
        return logits


def googlenet(num_classes: int = 10, in_channels: int = 3, width: int = 8) -> nn.Module:
    return GoogLeNet(num_classes, in_channels, width)


# -- SqueezeNet: Fire modules (squeeze, two expands concatenated) -------------------------------


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(x)), F.relu(self.expand3x3(x))], 1)


class SqueezeNet(nn.Module):
    """SqueezeNet 1.1's layout (squeeze : expand1x1 : expand3x3 = 1 : 4 : 4) at width/64 of
    its channels: the big 3x3 expands lose input and output channels at once, so at density
    0.3 and channel sparsity 0.4 the alive channels hold fewer weights than the budget."""

    def __init__(self, num_classes: int, in_channels: int, width: int) -> None:
        super().__init__()
        s = max(1, width // 4)
        pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 2),
            nn.ReLU(),
            Fire(width, s, 4 * s),
            Fire(8 * s, s, 4 * s),
            pool,
            Fire(8 * s, 2 * s, 8 * s),
            Fire(16 * s, 2 * s, 8 * s),
            pool,
            Fire(16 * s, 3 * s, 12 * s),
            Fire(24 * s, 3 * s, 12 * s),
            Fire(24 * s, 4 * s, 16 * s),
            Fire(32 * s, 4 * s, 16 * s),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Conv2d(32 * s, num_classes, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


def squeezenet(num_classes: int = 10, in_channels: int = 3, width: int = 8) -> nn.Module:
    return SqueezeNet(num_classes, in_channels, width)


# -- VoVNet: one-shot aggregation (every conv's output concatenated once, 1x1 after) ------------


class OSA(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, layers: int = 3) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Sequential(conv_bn(cin if i == 0 else mid, mid, 3), nn.ReLU()) for i in range(layers)
        )
        self.concat = nn.Sequential(conv_bn(cin + layers * mid, cout), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [x]
        for conv in self.convs:
            outs.append(conv(outs[-1]))
        return self.concat(torch.cat(outs, 1))


class VoVNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: int) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(conv_bn(in_channels, 2 * w, 3, 2), nn.ReLU())
        self.stage1 = OSA(2 * w, w, 4 * w)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.stage2 = OSA(4 * w, 2 * w, 8 * w)
        self.head = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.pool(self.stage1(self.stem(x))))
        return self.head(x.mean((2, 3)))


def vovnet(num_classes: int = 10, in_channels: int = 3, width: int = 8) -> nn.Module:
    return VoVNet(num_classes, in_channels, width)


# -- GhostNet: a primary and a cheap conv concatenated, sliced, gated by squeeze-excitation -----


class GhostModule(nn.Module):
    def __init__(self, cin: int, cout: int, relu: bool = True) -> None:
        super().__init__()
        self.out = cout
        init = (cout + 1) // 2
        act = nn.ReLU() if relu else nn.Identity()
        self.primary_conv = nn.Sequential(
            nn.Conv2d(cin, init, 1, bias=False), nn.BatchNorm2d(init), act
        )
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(init, init, 3, 1, 1, groups=init, bias=False),
            nn.BatchNorm2d(init),
            nn.ReLU() if relu else nn.Identity(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)
        x2 = self.cheap_operation(x1)
        return torch.cat([x1, x2], 1)[:, : self.out]


class GhostBottleneck(nn.Module):
    """Ghost module, (stride 2: a depthwise conv over the whole concatenation), squeeze-excitation,
    Ghost module, residual: timm's ``blocks.3.0`` of ghostnet_100 at stride 2."""

    def __init__(self, cin: int, mid: int, cout: int, se: bool, stride: int = 1) -> None:
        super().__init__()
        self.ghost1 = GhostModule(cin, mid)
        self.conv_dw = conv_bn(mid, mid, 3, stride, groups=mid) if stride > 1 else nn.Identity()
        self.se = SqueezeExcite(mid, max(1, mid // 4)) if se else nn.Identity()
        self.ghost2 = GhostModule(mid, cout, relu=False)
        same = cin == cout and stride == 1
        self.shortcut = nn.Identity() if same else conv_bn(cin, cout, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ghost2(self.se(self.conv_dw(self.ghost1(x)))) + self.shortcut(x)


class GhostNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: int) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(conv_bn(in_channels, w, 3, 2), nn.ReLU())
        self.blocks = nn.Sequential(
            GhostBottleneck(w, 2 * w, w, se=False),
            GhostBottleneck(w, 4 * w, 2 * w, se=True, stride=2),
        )
        self.head = nn.Linear(2 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def ghostnet(num_classes: int = 10, in_channels: int = 3, width: int = 8) -> nn.Module:
    return GhostNet(num_classes, in_channels, width)


# -- MobileNetV3: hard-swish, squeeze-excitation with a hard-sigmoid gate --------------------


class HardSE(nn.Module):
    """MobileNetV3's squeeze-excitation: pool, 1x1 reduce, ReLU, 1x1 expand, hard-sigmoid."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class V3Block(nn.Module):
    """1x1 expand, hard-swish, depthwise, hard-swish, squeeze-excitation, 1x1 project."""

    def __init__(self, cin: int, hidden: int, cout: int, stride: int) -> None:
        super().__init__()
        self.residual = stride == 1 and cin == cout
        self.expand = conv_bn(cin, hidden)
        self.dw = conv_bn(hidden, hidden, 3, stride, groups=hidden)
        self.se = HardSE(hidden, max(8, hidden // 4))
        self.project = conv_bn(hidden, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.hardswish(self.dw(F.hardswish(self.expand(x))))
        y = self.project(self.se(y))
        return x + y if self.residual else y


class MobileNetV3(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: int) -> None:
        super().__init__()
        w = width
        self.stem = conv_bn(in_channels, w, 3, 2)
        self.blocks = nn.Sequential(V3Block(w, 4 * w, w, 1), V3Block(w, 6 * w, 2 * w, 2))
        self.head = nn.Linear(2 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.hardswish(self.stem(x)))
        return self.head(x.mean((2, 3)))


def mobilenet_v3(num_classes: int = 10, in_channels: int = 3, width: int = 8) -> nn.Module:
    return MobileNetV3(num_classes, in_channels, width)


# -- RegNetX: grouped 3x3 convs whose groups are 8 channels wide, an odd number of them ---------


class XBlock(nn.Module):
    """1x1, grouped 3x3 (group width 8), 1x1, residual (RegNetX: no squeeze-excitation)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.a = nn.Sequential(conv_bn(cin, cout), nn.ReLU())
        self.b = nn.Sequential(conv_bn(cout, cout, 3, stride, groups=cout // 8), nn.ReLU())
        self.c = conv_bn(cout, cout)
        self.proj = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(self.b(self.a(x)))
        return F.relu(y + (x if self.proj is None else self.proj(x)))


class RegNetX(nn.Module):
    """Widths 3w and 5w (24 and 40 at width 8): 3 and 5 conv groups of 8 channels, as RegNet's
    real widths (232 = 29 groups of 8) make every rounding step a whole group."""

    def __init__(self, num_classes: int, in_channels: int, width: int) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(conv_bn(in_channels, w, 3, 2), nn.ReLU())
        self.s1 = XBlock(w, 3 * w, 1)
        self.s2 = XBlock(3 * w, 5 * w, 2)
        self.head = nn.Linear(5 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.s2(self.s1(self.stem(x))).mean((2, 3)))


def regnetx(num_classes: int = 10, in_channels: int = 3, width: int = 8) -> nn.Module:
    return RegNetX(num_classes, in_channels, width)


PATTERNS = (
    "mnasnet", "googlenet", "squeezenet", "vovnet", "ghostnet", "mobilenet_v3", "regnetx",
)  # fmt: skip
"""The issue-20 patterns: state-dict version logic, auxiliary outputs in training, Fire and OSA
concatenations (capacity below the budget), a Ghost module's gated concatenation, MobileNetV3's
hard-sigmoid squeeze-excitation, RegNet's grouped convs of 8-channel groups."""
EVERY = ARCHITECTURES + PATTERNS
