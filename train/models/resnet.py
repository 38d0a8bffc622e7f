"""ResNets with torchvision's parameter names: CIFAR ResNet-20/32/50, ImageNet ResNet-50, quickstart.

Initialization follows the released Chase code (UMM is ranked raw across layers, so the init scale
decides which layers lose channels): the CIFAR ResNet-50 (and ``resnet_quick``, built the same way)
keeps PyTorch's default Conv/Linear init; ResNet-20/32 use kaiming-normal fan_in on every Conv and
Linear weight (the released ``cifar_resnet`` is built with ``initializers.kaiming_normal``); the
ImageNet ResNet-50 uses kaiming-normal fan_in convs (its ``-c fanin`` model config). BatchNorm is
1/0 everywhere. The ``init`` argument (a recipe key, ``model.init``) switches: ``torch``,
``kaiming_fan_in`` (convs), ``kaiming_fan_in_all`` (convs and linear) or ``kaiming_fan_out``
(torchvision's choice, and this project's before it followed the released code).
"""

from __future__ import annotations

from torch import Tensor, nn

from train.errors import BadInput
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
        init: str = "torch",
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise BadInput(f"recipe key model.init: {init!r} is not one of {', '.join(INITS)}")
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
        _init_weights(self, init)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.fc(self.avgpool(x).flatten(1))


INITS = ("torch", "kaiming_fan_in", "kaiming_fan_in_all", "kaiming_fan_out")


def _init_weights(model: nn.Module, init: str) -> None:
    """Convs as ``init`` says (``torch``: leave PyTorch's default); Linear keeps PyTorch's default
    except with ``kaiming_fan_in_all``; BatchNorm weight 1, bias 0. Kaiming-normal with the ReLU
    gain √2 (the released code's ``kaiming_normal_`` default, leaky ReLU with slope 0, is the
    same); biases keep PyTorch's default."""
    linear_too = init == "kaiming_fan_in_all"
    for m in model.modules():
        if (isinstance(m, nn.Conv2d) and init != "torch") or (
            isinstance(m, nn.Linear) and linear_too
        ):
            mode = "fan_out" if init == "kaiming_fan_out" else "fan_in"
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@register_model
def resnet20(
    num_classes: int = 10, in_channels: int = 3, init: str = "kaiming_fan_in_all"
) -> ResNet:
    """CIFAR ResNet-20 (3 basic blocks per stage, 16/32/64), kaiming-normal fan_in as released."""
    return ResNet(
        BasicBlock,
        [3, 3, 3],
        [16, 32, 64],
        stem_width=16,
        num_classes=num_classes,
        in_channels=in_channels,
        init=init,
    )


@register_model
def resnet32(
    num_classes: int = 10, in_channels: int = 3, init: str = "kaiming_fan_in_all"
) -> ResNet:
    """CIFAR ResNet-32 (5 basic blocks per stage, 16/32/64), kaiming-normal fan_in as released."""
    return ResNet(
        BasicBlock,
        [5, 5, 5],
        [16, 32, 64],
        stem_width=16,
        num_classes=num_classes,
        in_channels=in_channels,
        init=init,
    )


@register_model
def resnet50_cifar(num_classes: int = 10, in_channels: int = 3, init: str = "torch") -> ResNet:
    """The CIFAR ResNet-50 of the GraNet/Chase code: 3x3 stem, no max-pool, bias-free classifier,
    PyTorch's default init."""
    return ResNet(
        Bottleneck,
        [3, 4, 6, 3],
        [64, 128, 256, 512],
        num_classes=num_classes,
        in_channels=in_channels,
        fc_bias=False,
        init=init,
    )


@register_model
def resnet50(num_classes: int = 1000, in_channels: int = 3, init: str = "kaiming_fan_in") -> ResNet:
    """ImageNet ResNet-50 v1.5; parameter names match torchvision's ``resnet50``; kaiming-normal
    fan_in convs as the released ImageNet code."""
    return ResNet(
        Bottleneck,
        [3, 4, 6, 3],
        [64, 128, 256, 512],
        stem="imagenet",
        num_classes=num_classes,
        in_channels=in_channels,
        init=init,
    )


@register_model
def resnet_quick(
    num_classes: int = 10,
    in_channels: int = 1,
    width: int = 16,
    blocks: int = 1,
    init: str = "torch",
) -> ResNet:
    """A small bottleneck ResNet for the quickstart: three stages of ``blocks`` bottlenecks."""
    return ResNet(
        Bottleneck,
        [blocks] * 3,
        [width, 2 * width, 4 * width],
        stem_width=2 * width,
        num_classes=num_classes,
        in_channels=in_channels,
        init=init,
    )
