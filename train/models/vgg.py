"""VGG-16/19 with BatchNorm, CIFAR variant (the GraNet/Chase model zoo).

Initialized as the released Chase code: kaiming-normal fan_out convs with zero bias, N(0, 0.01)
for the classifier, BatchNorm weight 1 and bias 0.
"""

from __future__ import annotations

from torch import Tensor, nn

from train.models.registry import register_model

_CONFIGS = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "vgg19": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
    ],
}


class VGG(nn.Module):
    def __init__(self, config: list, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [
                    nn.Conv2d(channels, item, 3, padding=1),
                    nn.BatchNorm2d(item),
                    nn.ReLU(inplace=True),
                ]
                channels = item
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


@register_model
def vgg16(num_classes: int = 10, in_channels: int = 3) -> VGG:
    return VGG(_CONFIGS["vgg16"], num_classes, in_channels)


@register_model
def vgg19(num_classes: int = 10, in_channels: int = 3) -> VGG:
    return VGG(_CONFIGS["vgg19"], num_classes, in_channels)
