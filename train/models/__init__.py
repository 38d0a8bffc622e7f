"""Model zoo: importing this package registers every model; ``create_model`` builds any
``model.name`` form (see ``train.models.sources``)."""

from train.models import mlp, resnet, vgg  # noqa: F401  (registration side effects)
from train.models.registry import list_models
from train.models.sources import create_model, model_kwargs, resolve

__all__ = ["create_model", "list_models", "model_kwargs", "resolve"]
