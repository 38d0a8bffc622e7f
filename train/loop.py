"""The training loop: a plain, readable epoch loop (torchvision references style) with the Chase
controller hooked in after every optimizer step, checkpoints every epoch and exact resume.

Under torchrun every process runs this same loop on its shard of each global batch (DDP averages
the gradients, so weights and masks stay identical by construction); rank 0 alone reads and writes
the run directory. ``CHASE_DEPLOY_DEBUG_DUMP_DIR`` (tests only) makes every rank save its final
weights, buffers and masks there as ``rank<N>.pt`` so replicas can be compared from outside, and
``rank<N>.exit.json`` with the process-group threads still alive after shutdown (there must be none);
``CHASE_DEPLOY_DEBUG_SIGKILL_AT=RANK:STEP`` makes that rank kill itself right after that step.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from train.accuracy import count_correct
from train.atomic import torch_save, write_json, write_text
from train.checkpoint import load_checkpoint, save_checkpoint
from train.config import Recipe, channel_until_epoch, explore_until_epoch
from train.data import DataBundle, build_data
from train.data.shapes import DataShape
from train.density import capped_message
from train.distill import Teacher, build_teacher, check_same_teacher, kd_loss
from train.distributed import (
    DistInfo,
    all_reduce_sum,
    check_agreement,
    dist_info_from_env,
    from_main,
    init_distributed,
    live_process_group_threads,
    process_device,
    shutdown,
    sync_buffers,
)
from train.errors import BadInput
from train.group_fit import fitted
from train.groups import ChannelGroup, ModelGroups
from train.metrics import MetricsLog
from train.models import create_model, resolve
from train.optim import build_optimizer, lr_at, set_lr
from train.outputs import aux_weight, classification_loss, main_output
from train.plan import ChannelPlan, empty_plan
from train.progress import Progress, log
from train.run_dir import RunDir
from train.state_versions import KEY as VERSIONS_KEY
from train.state_versions import module_versions, versioned
from train.training_flops import TrainingFlops
from train.weights import start_from_weights

GroupDeriver = Callable[[nn.Module, Sequence[int], bool], Sequence[ChannelGroup]]
DEBUG_DUMP_ENV = "CHASE_DEPLOY_DEBUG_DUMP_DIR"
DEBUG_KILL_ENV = "CHASE_DEPLOY_DEBUG_SIGKILL_AT"  # "RANK:STEP": that rank kills itself after STEP


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda: no CUDA device is visible; use --device cpu or auto")
    return torch.device(name)


def resolve_model_kwargs(recipe: Recipe, data: DataBundle | DataShape) -> None:
    """Fill num_classes / in_channels / input_size from the data unless the recipe sets them."""
    implied = {
        "num_classes": data.num_classes,
        "in_channels": data.input_shape[0],
        "in_chans": data.input_shape[0],
        "input_size": data.input_shape[1],
    }
    for key, value in resolve(recipe.model.name).data_kwargs(**implied).items():
        if key not in recipe.model.kwargs:
            recipe.model.kwargs[key] = value
    given = recipe.model.kwargs.get("num_classes")
    if given is not None and given != data.num_classes:
        raise BadInput(
            f"recipe key model.num_classes: {given}, but dataset {recipe.data.name} has {data.num_classes} classes"
        )


def train(
    recipe: Recipe,
    out: Path,
    *,
    resume: str | None = None,
    device: str = "auto",
    derive_groups: GroupDeriver | None = None,
) -> Path:
    """Train ``recipe`` into ``out``; returns the path of final.pt.

    ``derive_groups(model, sample_shape, prune_skip)`` returns the model's prunable channel
    groups (``chase_deploy.graph.analysis.derive_groups``, which traces the model through ONNX;
    ``train`` itself never imports it). Only channel pruning (``chase.channel_sparsity`` > 0)
    needs it."""
    dev = process_device(select_device(device), dist_info_from_env())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist_info = init_distributed(dev)
    try:
        return Trainer(recipe, RunDir(Path(out)), dev, dist_info, derive_groups).fit(resume)
    except BaseException as e:
        # The traceback's frames hold the trainer, its DDP wrapper and so the process group:
        # let them go, so that shutdown() really frees the group before the interpreter exits.
        traceback.clear_frames(e.__traceback__)
        raise
    finally:
        shutdown()
        _debug_dump_exit(dist_info)


def _debug_dump_exit(info: DistInfo) -> None:
    """Tests only: the process-group threads still alive once training has shut down (none)."""
    where = os.environ.get(DEBUG_DUMP_ENV)
    if where:
        write_json(
            Path(where) / f"rank{info.rank}.exit.json",
            {"rank": info.rank, "live_process_group_threads": live_process_group_threads()},
        )


class Trainer:
    def __init__(
        self,
        recipe: Recipe,
        paths: RunDir,
        device: torch.device,
        dist_info: DistInfo,
        derive_groups: GroupDeriver | None = None,
    ) -> None:
        self.recipe, self.paths, self.device, self.dist = recipe, paths, device, dist_info
        self.derive_groups = derive_groups
        self.groups_note: str | None = None
        self.model_groups: ModelGroups | None = None  # saved with the run when derived
        self.main = dist_info.is_main
        torch.manual_seed(recipe.seed)
        self.data = build_data(recipe.data, recipe.seed, dist_info.rank, dist_info.world)
        if len(self.data.train) == 0:
            raise BadInput(
                "recipe key data.batch_size: larger than the training set; no full batch per epoch"
            )
        resolve_model_kwargs(recipe, self.data)
        self.model = create_model(recipe.model.name, **recipe.model.kwargs)
        self.sources: dict[str, dict] = {}  # model.weights and the teacher: path, sha256
        if recipe.model.weights is not None:
            self.sources["weights"] = start_from_weights(self.model, recipe.model)
        self.model = self.model.to(device)
        if device.type == "cuda" and recipe.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, recipe.train)
        self.steps_per_epoch = len(self.data.train)
        self.teacher = self._build_teacher()
        self.channel_groups: list[ChannelGroup] = []
        self.chase = self._build_chase() if recipe.sparse else None
        self.shrinker = self._build_shrinker()
        self.flops = TrainingFlops.of_model(self.model, self.data.input_shape, device)
        self._count_alive()
        self.net: nn.Module = self.model
        self._wrap()
        amp = recipe.train.amp if device.type == "cuda" else "none"
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
        self.metrics = MetricsLog(paths.metrics, enabled=self.main)
        self.shrink_steps: list[int] = []  # steps at which this process rebuilt its model
        self.epoch = 0  # epochs finished
        self.step = 0  # optimizer steps taken
        self.val_acc: float | None = None  # of the last finished epoch
        self.aux_weight = aux_weight(recipe.model.name, recipe.train.aux_weight)
        self.aux_noted = False

    def _build_chase(self):
        from train.chase import Chase

        cfg = self.recipe.chase
        self.channel_groups = list(self._channel_groups())
        # snip/grasp score the first training batches of epoch 1 (train.saliency)
        init_data = itertools.islice(self.data.train.batches(0), cfg.init_batches)
        return Chase(
            self.model,
            groups=self.channel_groups,
            cfg=cfg,
            optimizer=self.optimizer,
            steps_per_epoch=self.steps_per_epoch,
            epochs=self.recipe.train.epochs,
            explore_until=explore_until_epoch(self.recipe),
            channel_until=channel_until_epoch(self.recipe),
            seed=self.recipe.seed,
            from_weights=self.recipe.model.weights is not None,
            init_data=init_data,
        )

    def _build_teacher(self) -> Teacher | None:
        """``train.distill``: the frozen teacher, on this process's device."""
        cfg = self.recipe.train.distill
        if cfg.teacher is None:
            return None
        teacher = build_teacher(
            cfg,
            self.data.input_shape,
            self.data.num_classes,
            self.device,
            self.recipe.train.channels_last,
        )
        self.sources["teacher"] = teacher.record()
        return teacher

    def _sources_lines(self) -> list[str]:
        """What the run starts from and learns from, said once at the start."""
        lines = []
        weights = self.sources.get("weights")
        if weights is not None:
            ignored = f", {len(weights['ignored'])} keys left at init" if weights["ignored"] else ""
            masks = (
                "; first masks keep each layer's largest |w|"
                if self.recipe.sparse and self.recipe.chase.density < 1
                else ""
            )
            lines.append(
                f"starting from {weights['path']} ({weights['format']}, sha256 "
                f"{weights['sha256'][:12]}{ignored}){masks}"
            )
        teacher = self.sources.get("teacher")
        if teacher is not None:
            cfg = self.recipe.train.distill
            lines.append(
                f"distilling from {teacher['path']} (sha256 {teacher['sha256'][:12]}): "
                f"alpha {cfg.alpha:g}, temperature {cfg.temperature:g}"
            )
        return lines

    def _build_shrinker(self):
        """``chase.shrink``: the model is rebuilt smaller as channels go (``train.shrink``)."""
        if not self.recipe.chase.shrink or self.chase is None or not self.channel_groups:
            return None
        from train.shrink import Shrinker

        return Shrinker(self.model, self.channel_groups, self.optimizer)

    def _wrap(self) -> None:
        """The DDP wrapper around the model (again after the model shrank)."""
        self.net = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    def _shrink(self, events: list[dict], epoch: int) -> None:
        """After a channel event, rebuild the model smaller when the rule says so (every rank
        decides alike: the alive channels agree, which the controller has just checked)."""
        channel_steps = [e["step"] for e in events if e["event"] == "channels"]
        if self.shrinker is None or not channel_steps or self.chase is None:
            return
        alive = self.chase.alive_channels()
        last = self.chase.timeline.last_channel_event() in channel_steps
        if not self.shrinker.due(alive, last) or not self.shrinker.rebuild(alive):
            return
        self._after_rebuild()
        self.shrink_steps.append(self.step)
        self.metrics.write(
            {
                "event": "shrink",
                "epoch": epoch + 1,
                "step": self.step,
                "channels": self.shrinker.built_channels(),
                "channels_total": self.shrinker.channels_total,
                "params": self.shrinker.param_count(),
            }
        )

    def _after_rebuild(self) -> None:
        assert self.chase is not None and self.shrinker is not None
        self.chase.rebind(self.shrinker)
        self._wrap()

    def _channel_groups(self) -> Sequence[ChannelGroup]:
        cfg = self.recipe.chase
        if cfg.channel_sparsity <= 0:
            return []
        if self.derive_groups is None:
            raise BadInput(
                "recipe key chase.channel_sparsity: channel pruning needs the model's channel "
                "groups, which chase_deploy derives from its ONNX graph; train with "
                "`chase-deploy train` or pass derive_groups=chase_deploy.graph.analysis.derive_groups"
            )
        found = self.derive_groups(self.model, self.data.input_shape, cfg.prune_skip)
        self.model_groups = fitted(self.model, found, cfg.prune_skip, self.data.input_shape)
        groups, excluded = list(self.model_groups), self.model_groups.excluded
        self.groups_note = (
            f"channel groups: {len(groups)} prunable ({sum(g.width for g in groups)} channels), "
            f"{len(excluded)} layers kept whole (`chase-deploy inspect RECIPE` says why)"
        )
        return groups

    # ------------------------------------------------------------------ run
    def fit(self, resume: str | None) -> Path:
        self._prepare_out_dir(resume)
        epochs = self.recipe.train.epochs
        log(
            f"training {self.recipe.model.name} on {self.recipe.data.name}: {epochs} epochs x "
            f"{self.steps_per_epoch} steps, device {self.device}, {self.dist.world} process(es)",
            self.main,
        )
        if self.groups_note:
            log(self.groups_note, self.main)
        for line in self._sources_lines():
            log(line, self.main)
        if self.recipe.chase.shrink and self.recipe.chase.align < 8:
            log(
                f"note: chase.shrink with chase.align {self.recipe.chase.align}: irregular widths "
                "run slowly on CPU and GPU kernels; chase.align: 8 keeps the speed",
                self.main,
            )
        while self.epoch < epochs:
            start = time.perf_counter()
            train_loss = self._train_epoch(self.epoch)
            val_acc = self.val_acc = self.evaluate()
            self._check_replicas(f"after epoch {self.epoch + 1}")
            self.epoch += 1
            record = {
                "event": "epoch",
                "epoch": self.epoch,
                "step": self.step,
                "train_loss": train_loss,
                "val_acc": val_acc,
                **self._sparsity(),
                "lr": self.optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - start,
                **self.flops.record(),
            }
            self.metrics.write(record)
            if self.chase is not None:
                self.metrics.write(
                    {
                        "event": "amenable",
                        "epoch": self.epoch,
                        "step": self.step,
                        **self.chase.amenable_stats(),
                    }
                )
            log(
                f"epoch {self.epoch}/{epochs} loss {train_loss:.4f} val_acc {val_acc:.4f} "
                f"density {record['density']:.4f} channel_sparsity {record['channel_sparsity']:.4f} "
                f"({record['seconds']:.1f}s)",
                self.main,
            )
            if self.main:
                save_checkpoint(self.paths.last, self._checkpoint(full=True))
        if self.main:
            save_checkpoint(self.paths.final, self._checkpoint(full=False))
            write_json(self.paths.plan, self._plan().to_dict())
            log(f"wrote {self.paths.final} and {self.paths.plan}", self.main)
        self._debug_dump()
        return self.paths.final

    def _train_epoch(self, epoch: int) -> float:
        self.net.train()
        cfg = self.recipe.train
        bar = Progress(self.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", enabled=self.main)
        losses = []
        for x, y in self.data.train.batches(epoch):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.device.type == "cuda" and cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            self.step += 1
            lr = lr_at(self.step, cfg, self.steps_per_epoch)
            set_lr(self.optimizer, lr)
            with self._autocast():
                loss, aux = classification_loss(
                    self.net(x), y, cfg.label_smoothing, self.aux_weight, self._kd_loss(x, y)
                )
            self._note_aux(aux)
            self.optimizer.zero_grad(set_to_none=True)
            skipped = self._backward_and_step(loss)
            events = []
            if self.chase is not None:
                events = self.chase.after_step(self.step, skipped=skipped)
                for event in events:
                    self.metrics.write(
                        {"epoch": epoch + 1, **event} if "epoch" not in event else event
                    )
                    if event["event"] == "budget_capped":
                        log(self._capped_line(event), self.main)
                self._shrink(events, epoch)
            self._count_flops(len(y) * self.dist.world, events)
            losses.append(loss.detach())
            bar.update(loss=lambda: float(losses[-1]), lr=lr)
            self._debug_kill()
        bar.close()
        stacked = torch.stack(losses).double()
        loss_sum, count = float(stacked.sum()), len(losses)
        loss_sum, count = all_reduce_sum([loss_sum, float(count)], self.device)
        return loss_sum / max(count, 1)

    def _capped_line(self, event: dict) -> str:
        assert self.chase is not None
        return capped_message(event["step"], event["budget"], event["capacity"], self.chase.total)

    def _note_aux(self, count: int) -> None:
        """Say once that the model has auxiliary outputs and how they are weighted."""
        if count and not self.aux_noted:
            self.aux_noted = True
            log(
                f"the model returns {count} auxiliary output(s) in training: loss = main + "
                f"{self.aux_weight:g} x each auxiliary loss (train.aux_weight); evaluation, "
                f"export and slim use the main output (eval mode)",
                self.main,
            )

    def _kd_loss(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """With ``train.distill``, the main output's loss: distillation from the teacher's logits
        of this batch (auxiliary outputs keep their cross-entropy terms)."""
        if self.teacher is None:
            return None
        cfg = self.recipe.train.distill
        smoothing = self.recipe.train.label_smoothing
        teacher = self.teacher.logits(x)
        return lambda logits: kd_loss(logits, teacher, y, cfg.alpha, cfg.temperature, smoothing)

    def _count_flops(self, samples: int, events: list[dict]) -> None:
        """Training FLOPs of this step with the weights it trained (``train.training_flops``):
        an exploration that grew weights by gradient read the dense weight gradient. Then the
        counts alive for the next step, if an event changed them."""
        grew = any(e["event"] == "exploration" and e["grown"] > 0 for e in events)
        self.flops.step(samples, dense_grad=grew and self.recipe.chase.growth == "gradient")
        if events:
            self._count_alive()

    def _count_alive(self) -> None:
        if self.chase is not None:
            self.flops.set_alive(self.chase.alive_weights(self.flops.shapes))

    def _backward_and_step(self, loss: torch.Tensor) -> bool:
        """Backward, unscale, let Chase read the dense grads, clip, step. True if the step was skipped."""
        clip = self.recipe.train.grad_clip
        if self.scaler is None:
            loss.backward()
            if self.chase is not None:
                self.chase.before_step(self.step)
            if clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
            return False
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        if self.chase is not None:
            self.chase.before_step(self.step)
        if clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return self.scaler.get_scale() < scale

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def evaluate(self) -> float:
        """Top-1 accuracy over the whole validation set, each sample counted once across ranks.

        Every rank first takes rank 0's BatchNorm statistics, so the ranks evaluate (and rank 0
        checkpoints) one and the same model.
        """
        self.net.eval()
        sync_buffers(self.model)

        def predict(x: torch.Tensor) -> torch.Tensor:
            x = x.to(self.device)
            if self.device.type == "cuda" and self.recipe.train.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                return main_output(self.model(x))

        (correct,), total = count_correct([predict], self.data.val.batches(0))
        c, t = all_reduce_sum([float(correct), float(total)], self.device)
        return c / max(t, 1.0)

    # ------------------------------------------------------------------ replicas
    def _replica_state(self) -> dict[str, torch.Tensor]:
        state = dict(self.model.state_dict())
        if self.chase is not None:
            state.update({f"mask {k}": v for k, v in self.chase.masks.items()})
        return state

    def _check_replicas(self, when: str) -> None:
        """Cheap guard (one all-reduce of checksums): every rank holds the same weights, buffers
        and masks as rank 0, which is about to checkpoint them."""
        if self.dist.enabled:
            check_agreement(self._replica_state(), when, self.device)

    def _debug_kill(self) -> None:
        """Tests only: die by SIGKILL at an exact step, as a crash would, with no polling from
        outside; once, in torchrun's first attempt. Under torchrun, a rank at a step after epoch
        E's checkpoint is past the point where rank 0 wrote it: the step's gradient all-reduce
        waited for rank 0."""
        first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if first_attempt and os.environ.get(DEBUG_KILL_ENV) == f"{self.dist.rank}:{self.step}":
            os.kill(os.getpid(), signal.SIGKILL)

    def _debug_dump(self) -> None:
        where = os.environ.get(DEBUG_DUMP_ENV)
        if where:
            state = {k: v.detach().cpu() for k, v in self._replica_state().items()}
            state.update({k: v.detach().cpu() for k, v in self._dense_state().items()})
            torch_save(
                Path(where) / f"rank{self.dist.rank}.pt",
                {
                    "rank": self.dist.rank,
                    "world": self.dist.world,
                    "state": state,
                    "shrink_steps": list(self.shrink_steps),
                },
            )

    # ------------------------------------------------------------------ state
    def _sparsity(self) -> dict[str, float]:
        if self.chase is None:
            return {"density": 1.0, "channel_sparsity": 0.0}
        m = self.chase.epoch_metrics()
        return {"density": float(m["density"]), "channel_sparsity": float(m["channel_sparsity"])}

    def _plan(self) -> ChannelPlan:
        return self.chase.channel_plan() if self.chase is not None else empty_plan()

    def _dense_state(self) -> dict[str, torch.Tensor]:
        """The model's state_dict in its original shapes (a shrunk model's removed entries 0)."""
        if self.shrinker is not None:
            return self.shrinker.dense_state_dict()
        return self.model.state_dict()

    def _checkpoint(self, *, full: bool) -> dict[str, Any]:
        masks = (
            {k: v.detach().cpu() for k, v in self.chase.masks.items()}
            if self.chase is not None
            else {}
        )
        ckpt: dict[str, Any] = {
            "model": {"name": self.recipe.model.name, "kwargs": dict(self.recipe.model.kwargs)},
            "state_dict": {k: v.detach().cpu() for k, v in self._dense_state().items()},
            VERSIONS_KEY: module_versions(self.model.state_dict()),
            "masks": masks,
            "channel_plan": self._plan().to_dict(),
            "recipe": self.recipe.to_dict(),
            "progress": {"epoch": self.epoch, "step": self.step},
            "input_shape": list(self.data.input_shape),
            "val_acc": self.val_acc,
            "train_flops": self.flops.state_dict(),
        }
        if self.model_groups is not None:
            ckpt["channel_groups"] = self.model_groups.to_dict()
        if self.sources:
            ckpt["sources"] = self.sources
        if full:
            ckpt["world_size"] = self.dist.world
            shrinker = self.shrinker
            if shrinker is None:
                ckpt["optimizer"] = _to_cpu(self.optimizer.state_dict())
            else:  # dense shapes: it loads into the unshrunk model's optimizer
                ckpt["optimizer"] = _to_cpu(shrinker.dense_optimizer_state())
            ckpt["chase"] = _to_cpu(self.chase.state_dict()) if self.chase is not None else None
            ckpt["shrink"] = _to_cpu(shrinker.state_dict()) if shrinker is not None else None
            ckpt["scaler"] = self.scaler.state_dict() if self.scaler is not None else None
            ckpt["rng"] = {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            }
        return ckpt

    def _prepare_out_dir(self, resume: str | None) -> None:
        out = self.paths.path
        ckpt = self._load_resume(resume)
        if ckpt is not None:
            self._restore(ckpt, resume if resume != "auto" else str(self.paths.last))
        if self.main:
            out.mkdir(parents=True, exist_ok=True)
            import yaml

            write_text(self.paths.recipe, yaml.safe_dump(self.recipe.to_dict(), sort_keys=False))
            if self.model_groups is not None:
                write_json(self.paths.groups, self.model_groups.to_dict())
            if self.sources:
                write_json(self.paths.sources, self.sources)
            self.metrics.truncate_after(self.step)

    def _resume_source(self, resume: str | None) -> Path | None:
        if resume == "auto":
            return self.paths.last if self.paths.last.exists() else None
        if resume:
            source = Path(resume)
            if not source.exists():
                raise BadInput(f"--resume {resume}: no such checkpoint")
            return source
        if self.paths.last.exists() or self.paths.final.exists():
            raise BadInput(
                f"{self.paths.path} already holds a run; pass --resume auto to continue it or --out to start a new one"
            )
        return None

    def _load_resume(self, resume: str | None) -> dict[str, Any] | None:
        """The checkpoint to resume from, as rank 0 reads it: rank 0 alone looks at the run
        directory and sends the file's bytes to the other ranks."""
        loaded: dict[str, Any] = {}

        def read_on_main() -> bytes | None:
            source = self._resume_source(resume)
            if source is None:
                return None
            loaded["ckpt"] = load_checkpoint(source, map_location=self.device)
            return source.read_bytes() if self.dist.enabled else b""

        data = from_main(read_on_main, self.device)
        if data is None:
            return None
        if self.main:
            return loaded["ckpt"]
        return torch.load(io.BytesIO(data), map_location=self.device, weights_only=True)

    def _restore(self, ckpt: dict[str, Any], source: str) -> None:
        if ckpt.get("optimizer") is None:
            raise BadInput(
                f"--resume {source}: not a resumable checkpoint (use checkpoints/last.pt)"
            )
        if ckpt["recipe"] != self.recipe.to_dict():
            diff = _first_difference(ckpt["recipe"], self.recipe.to_dict())
            raise BadInput(
                f"--resume {source}: the recipe differs from the checkpoint's at {diff}; resume with the same recipe"
            )
        sources = ckpt.get("sources", {})
        if self.teacher is not None:
            check_same_teacher(self.teacher, sources.get("teacher"), source)
        if "weights" in sources:  # what the run started from, whatever the file holds now
            self.sources["weights"] = sources["weights"]
        self.model.load_state_dict(
            versioned(ckpt["state_dict"], ckpt.get(VERSIONS_KEY), self.model)
        )
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.chase is not None:
            self.chase.load_state_dict(ckpt["chase"])
        if self.shrinker is not None and self.shrinker.load_state_dict(ckpt.get("shrink")):
            self._after_rebuild()  # the same shapes the run had when it saved last.pt
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        if ckpt["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in ckpt["rng"]["cuda"]])
        self.epoch = ckpt["progress"]["epoch"]
        self.step = ckpt["progress"]["step"]
        self.val_acc = ckpt.get("val_acc")
        self.flops.load_state_dict(ckpt.get("train_flops"))
        self._count_alive()
        log(f"resumed from {source} at epoch {self.epoch}, step {self.step}", self.main)
        trained_with = ckpt.get("world_size", 1)
        if trained_with != self.dist.world:
            log(
                f"note: {source} was trained with {trained_with} process(es), resuming with "
                f"{self.dist.world}: valid, but each rank's data shard and augmentation differ "
                f"from an uninterrupted run's, so the result is not bit-identical to it",
                self.main,
            )


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_cpu(v) for v in obj)
    return obj


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return prefix.rstrip(".") or "the top level"
