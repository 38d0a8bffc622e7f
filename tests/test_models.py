import pytest
import torch
from torch import nn

from train.errors import BadInput
from train.models import create_model, list_models

SMALL = {"mlp": dict(in_channels=1, input_size=8), "resnet_quick": dict(width=4)}


def _input(name: str) -> torch.Tensor:
    if name == "mlp":
        return torch.randn(2, 1, 8, 8)
    if name == "resnet50":
        return torch.randn(2, 3, 64, 64)
    return torch.randn(2, 3, 16, 16) if name != "resnet_quick" else torch.randn(2, 1, 16, 16)


def _norms_reading(model: nn.Module, x: torch.Tensor) -> dict[str, str]:
    """Producer module name -> the norm layer that reads its output, traced by forward hooks."""
    made_by: dict[int, str] = {}
    read_by: dict[str, str] = {}

    def hook(name):
        def record(module, inputs, output):
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                source = made_by.get(id(inputs[0]))
                if source is not None:
                    read_by[source] = name
            made_by[id(output)] = name

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return read_by


@pytest.mark.parametrize("name", list_models())
def test_forward_and_groups(name: str) -> None:
    kwargs = SMALL.get(name, {})
    if name == "resnet_quick":
        kwargs = dict(width=4, in_channels=1)
    model = create_model(name, num_classes=7, **kwargs).eval()
    with torch.no_grad():
        assert model(_input(name)).shape == (2, 7)
    norms = _norms_reading(model, _input(name))
    modules = dict(model.named_modules())
    for prune_skip in (False, True):
        for g in model.channel_groups(prune_skip=prune_skip):
            for p in g.producers:
                out = (
                    modules[p].out_channels
                    if isinstance(modules[p], nn.Conv2d)
                    else modules[p].out_features
                )
                assert out == g.width, (name, g.name, p)
            for n in (norms[p] for p in g.producers if p in norms):
                assert modules[n].num_features == g.width
            for c in g.consumers:
                inp = (
                    modules[c].in_channels
                    if isinstance(modules[c], nn.Conv2d)
                    else modules[c].in_features
                )
                assert inp == g.width, (name, g.name, c)


def test_paper_channel_counts() -> None:
    # CHASE reference: 32 prunable layers / 7,552 channels for ResNet-50; 15 / 4,992 for VGG-19.
    for name in ("resnet50", "resnet50_cifar"):
        groups = create_model(name).channel_groups()
        assert len(groups) == 32 and sum(g.width for g in groups) == 7552
    groups = create_model("vgg19").channel_groups()
    assert len(groups) == 15 and sum(g.width for g in groups) == 4992
    assert len(create_model("resnet20").channel_groups()) == 9


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


def test_prune_skip_streams_cover_residual_sums() -> None:
    streams = [
        g for g in create_model("resnet50").channel_groups(prune_skip=True) if g.kind == "stream"
    ]
    assert len(streams) == 4
    first = streams[0]
    assert first.producers == (
        "layer1.0.downsample.0",
        "layer1.0.conv3",
        "layer1.1.conv3",
        "layer1.2.conv3",
    )
    assert "layer2.0.conv1" in first.consumers and "layer2.0.downsample.0" in first.consumers
    assert streams[-1].consumers[-1] == "fc"


def test_unknown_model_and_kwarg() -> None:
    with pytest.raises(BadInput, match="unknown model"):
        create_model("nope")
    with pytest.raises(BadInput, match="not an argument"):
        create_model("vgg16", width=3)
