import pytest
import torch

from train.errors import BadInput
from train.models import create_model, list_models

SMALL = {"mlp": dict(in_channels=1, input_size=8), "resnet_quick": dict(width=4)}


def _input(name: str) -> torch.Tensor:
    if name == "mlp":
        return torch.randn(2, 1, 8, 8)
    if name == "resnet50":
        return torch.randn(2, 3, 64, 64)
    return torch.randn(2, 3, 16, 16) if name != "resnet_quick" else torch.randn(2, 1, 16, 16)


@pytest.mark.parametrize("name", list_models())
def test_forward(name: str) -> None:
    kwargs = SMALL.get(name, {})
    if name == "resnet_quick":
        kwargs = dict(width=4, in_channels=1)
    model = create_model(name, num_classes=7, **kwargs).eval()
    with torch.no_grad():
        assert model(_input(name)).shape == (2, 7)


def test_torchvision_names_for_imagenet_resnet50() -> None:
    names = set(create_model("resnet50").state_dict())
    for key in (
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.downsample.0.weight",
        "layer4.2.conv3.weight",
        "fc.bias",
    ):
        assert key in names
    assert sum(p.numel() for p in create_model("resnet50").parameters()) == 25_557_032


def test_unknown_model_and_kwarg() -> None:
    with pytest.raises(BadInput, match="unknown model"):
        create_model("nope")
    with pytest.raises(BadInput, match="not an argument"):
        create_model("vgg16", width=3)
