"""Model zoo: importing this package registers every model."""

from train.models import mlp, resnet, vgg  # noqa: F401  (registration side effects)
from train.models.groups import ChannelGroup
from train.models.registry import create_model, list_models, model_kwargs

__all__ = ["ChannelGroup", "create_model", "list_models", "model_kwargs"]
