"""ResNets with torchvision's parameter names: CIFAR ResNet-20/32/50, ImageNet ResNet-50, quickstart."""

from __future__ import annotations

from torch import Tensor, nn

from train.models.registry import register_model


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(inplanes, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: the stride sits on the 3x3 conv."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(inplanes, planes * 4, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def _shortcut(inplanes: int, outplanes: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(
        nn.Conv2d(inplanes, outplanes, 1, stride, bias=False), nn.BatchNorm2d(outplanes)
    )


class ResNet(nn.Module):
    """A ResNet whose stem is CIFAR-style (3x3, stride 1) or ImageNet-style (7x7/2 + max-pool)."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        widths: list[int],
        *,
        stem: str = "cifar",
        stem_width: int = 64,
        num_classes: int = 10,
        in_channels: int = 3,
        fc_bias: bool = True,
    ) -> None:
        super().__init__()
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, stem_width, 7, 2, 3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_channels, stem_width, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        inplanes = stem_width
        self.stage_names: list[str] = []
        for i, (n, planes) in enumerate(zip(layers, widths, strict=True)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(inplanes, planes, stride))
                inplanes = planes * block.expansion
            name = f"layer{i + 1}"
            setattr(self, name, nn.Sequential(*blocks))
            self.stage_names.append(name)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes, bias=fc_bias)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.fc(self.avgpool(x).flatten(1))


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@register_model
def resnet20(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    return ResNet(
        BasicBlock,
        [3, 3, 3],
        [16, 32, 64],
        stem_width=16,
        num_classes=num_classes,
        in_channels=in_channels,
    )


@register_model
def resnet32(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    return ResNet(
        BasicBlock,
        [5, 5, 5],
        [16, 32, 64],
        stem_width=16,
        num_classes=num_classes,
        in_channels=in_channels,
    )


@register_model
def resnet50_cifar(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """The CIFAR ResNet-50 of the GraNet/Chase code: 3x3 stem, no max-pool, bias-free classifier."""
    return ResNet(
        Bottleneck,
        [3, 4, 6, 3],
        [64, 128, 256, 512],
        num_classes=num_classes,
        in_channels=in_channels,
        fc_bias=False,
    )


@register_model
def resnet50(num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """ImageNet ResNet-50 v1.5; parameter names match torchvision's ``resnet50``."""
    return ResNet(
        Bottleneck,
        [3, 4, 6, 3],
        [64, 128, 256, 512],
        stem="imagenet",
        num_classes=num_classes,
        in_channels=in_channels,
    )


@register_model
def resnet_quick(
    num_classes: int = 10, in_channels: int = 1, width: int = 16, blocks: int = 1
) -> ResNet:
    """A small bottleneck ResNet for the quickstart: three stages of ``blocks`` bottlenecks."""
    return ResNet(
        Bottleneck,
        [blocks] * 3,
        [width, 2 * width, 4 * width],
        stem_width=2 * width,
        num_classes=num_classes,
        in_channels=in_channels,
    )
