"""Knowledge distillation (``train.distill``): the student learns from a trained teacher's logits.

loss = (1 − α)·CE(student, labels) + α·T²·KL(softmax(teacher/T) ‖ softmax(student/T))

(Hinton et al. 2015; T² keeps the soft term's gradients on the scale of the hard term's as T
grows). The KL is per sample, averaged over the batch, computed in float32 whatever the autocast
dtype. The teacher runs in eval mode under ``no_grad``, on the student's device, inside the
student's autocast; it draws no random numbers, so a resumed run stays bit-identical.

The teacher is a run directory or checkpoint (whose recipe names its model), or a weights file
with ``train.distill.model``. It must take this run's inputs and predict its classes: a
checkpoint's recorded input shape is compared, and one forward pass of a zero batch checks the
number of classes, before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from train.config import DistillConfig
from train.errors import BadInput
from train.models import create_model, resolve
from train.outputs import main_output
from train.weights import WeightsFile, load_into, read_weights

KEY = "train.distill.teacher"


def kd_loss(
    student: Tensor,
    teacher: Tensor,
    target: Tensor,
    alpha: float,
    temperature: float,
    label_smoothing: float = 0.0,
) -> Tensor:
    """(1 − α)·CE + α·T²·KL(softmax(teacher/T) ‖ softmax(student/T)), batch-averaged."""
    ce = F.cross_entropy(student, target, label_smoothing=label_smoothing)
    t = temperature
    kl = F.kl_div(
        F.log_softmax(student.float() / t, dim=1),
        F.log_softmax(teacher.float() / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1.0 - alpha) * ce + alpha * t * t * kl


class Teacher:
    """A frozen network and the file it came from."""

    def __init__(self, model: nn.Module, source: WeightsFile) -> None:
        self.model = model
        self.source = source

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        return main_output(self.model(x))

    def record(self) -> dict[str, str]:
        return {"given": self.source.given, **self.source.record()}


def build_teacher(
    cfg: DistillConfig,
    input_shape: Sequence[int],
    num_classes: int,
    device: torch.device,
    channels_last: bool = False,
) -> Teacher:
    """Read, build and check the teacher of ``cfg``; every problem is ``BadInput``."""
    assert cfg.teacher is not None
    source = read_weights(cfg.teacher, KEY)
    name, kwargs = _teacher_model(cfg, source, input_shape, num_classes)
    with torch.random.fork_rng(devices=[]):  # its throw-away init leaves the run's RNG alone
        model = create_model(name, **kwargs)
    load_into(model, source, (), KEY, f"the teacher model {name}")
    model = model.to(device).eval().requires_grad_(False)
    if channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    _check_output(model, source, input_shape, num_classes, device)
    return Teacher(model, source)


def _teacher_model(
    cfg: DistillConfig, source: WeightsFile, input_shape: Sequence[int], num_classes: int
) -> tuple[str, dict]:
    """The teacher's model name and arguments: from its checkpoint, or from train.distill.model."""
    if source.kind == "checkpoint":
        assert source.model is not None
        if cfg.model is not None:
            raise BadInput(
                f"train.distill.model: {cfg.teacher} is a chase-deploy checkpoint that names its "
                f"own model ({source.model['name']}); drop train.distill.model"
            )
        shape = source.input_shape
        if shape is not None and tuple(shape) != tuple(input_shape):
            raise BadInput(
                f"{KEY}: {cfg.teacher} was trained on inputs of shape {tuple(shape)}, this run's "
                f"data are {tuple(input_shape)}; distill from a teacher trained on the same inputs"
            )
        return source.model["name"], dict(source.model["kwargs"])
    if cfg.model is None:
        raise BadInput(
            f"train.distill.model: teacher {cfg.teacher} is a {source.kind} file, which does not "
            f"name its network; set train.distill.model: {{name: ..., and its arguments}}"
        )
    kwargs = {k: v for k, v in cfg.model.items() if k != "name"}
    implied = {
        "num_classes": num_classes,
        "in_channels": input_shape[0],
        "in_chans": input_shape[0],
        "input_size": input_shape[1],
    }
    for key, value in resolve(cfg.model["name"]).data_kwargs(**implied).items():
        kwargs.setdefault(key, value)
    return cfg.model["name"], kwargs


def _check_output(
    model: nn.Module,
    source: WeightsFile,
    input_shape: Sequence[int],
    num_classes: int,
    device: torch.device,
) -> None:
    """One forward pass of a zero batch: the teacher takes these inputs and predicts these classes."""
    x = torch.zeros(2, *input_shape, device=device)
    try:
        with torch.no_grad():
            out = model(x)
    except RuntimeError as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BadInput(
            f"{KEY}: {source.given} does not take this run's inputs of shape "
            f"{tuple(input_shape)} ({first[:120]}); distill from a teacher trained on the same data"
        ) from None
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[1] != num_classes:
        got = (
            f"{out.shape[1]} classes"
            if isinstance(out, Tensor) and out.dim() == 2
            else f"an output of shape {tuple(out.shape)}"
            if isinstance(out, Tensor)
            else f"a {type(out).__name__}"
        )
        raise BadInput(
            f"{KEY}: {source.given} predicts {got}, this run's data have {num_classes} classes; "
            f"distill from a teacher of the same classes"
        )


def check_same_teacher(teacher: Teacher, saved: dict | None, checkpoint: str) -> None:
    """On resume: the teacher is the file, byte for byte, that the run started with."""
    if saved is None:
        raise BadInput(
            f"--resume {checkpoint}: the run was trained without train.distill (no teacher in "
            f"the checkpoint); resume with the recipe it was saved with"
        )
    now = teacher.record()
    if now["path"] != saved["path"]:
        raise BadInput(
            f"{KEY}: {now['path']} is not the teacher this run started with ({saved['path']}); "
            f"resume with that teacher or start a new run"
        )
    if now["sha256"] != saved["sha256"]:
        raise BadInput(
            f"{KEY}: {now['path']} changed since this run started (sha256 {now['sha256'][:12]}..., "
            f"was {saved['sha256'][:12]}...); restore the original teacher or start a new run"
        )
