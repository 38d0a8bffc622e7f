"""torchrun integration: who am I, which backend, and the few collectives the loop needs.

Every helper also works with one process (no process group): it then returns its input unchanged,
so the training loop has a single code path. Conventions under torchrun:

- gloo on CPU, nccl on CUDA (one GPU per process, ``cuda:LOCAL_RANK``);
- rank 0 is the only writer and the only reader of the run directory: it decides what to resume
  and hands the checkpoint's bytes to the other ranks (``from_main``), so every rank resumes from
  the same ``last.pt`` even when the other machines cannot see the run directory;
- a collective that waits longer than the process-group timeout (``CHASE_DEPLOY_DIST_TIMEOUT``
  seconds, default 600) fails instead of hanging: a rank that dies or stalls takes the job down.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from train.errors import BadInput

TIMEOUT_ENV = "CHASE_DEPLOY_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def dist_info_from_env() -> DistInfo:
    """This process's place in the job, from the variables torchrun sets (one process otherwise)."""
    if not launched_by_torchrun():
        return DistInfo()
    return DistInfo(
        int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    )


def process_device(device: torch.device, info: DistInfo) -> torch.device:
    """The device this rank trains on: ``cuda:LOCAL_RANK`` on GPUs, else ``device`` itself."""
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if info.local_rank >= count:
        raise BadInput(
            f"torchrun local rank {info.local_rank} has no GPU ({count} visible); "
            f"use --nproc_per_node {count} or fewer, or --device cpu"
        )
    return torch.device("cuda", info.local_rank)


def init_distributed(device: torch.device, timeout_s: float | None = None) -> DistInfo:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); a no-op otherwise."""
    info = dist_info_from_env()
    if not info.enabled or dist.is_initialized():
        return info
    timeout = datetime.timedelta(seconds=timeout_s or _timeout_from_env())
    backend = "nccl" if device.type == "cuda" else "gloo"
    _import_modules_that_capture_the_world_group()
    store = _attempt_store(timeout)
    dist.init_process_group(
        backend,
        store=store,
        rank=info.rank,
        world_size=info.world,
        timeout=timeout,
        device_id=device if device.type == "cuda" else None,
    )
    return info


def _import_modules_that_capture_the_world_group() -> None:
    """Import ``torch.distributed.nn`` while no process group exists.

    Its functions take ``group=group.WORLD`` as a default argument, evaluated once, at import. The
    first import usually comes from DDP's constructor (through ``torch._dynamo``), after the group
    exists: the defaults then hold the world group for the life of the process, so
    ``destroy_process_group`` cannot free it, and gloo's threads (``gloo_tcp_loop``,
    ``pt_gloo_runloop``) are still running when the interpreter tears down. Tearing down running
    threads is what ended finished jobs with "terminate called without an active exception"
    (SIGABRT, torchrun exit 1). Imported first, the defaults hold None and the group dies when
    ``shutdown`` destroys it.
    """
    import torch.distributed.nn  # noqa: F401


def live_process_group_threads() -> list[str]:
    """Names of this process's threads that belong to a process group (Linux; [] elsewhere).

    Empty after ``shutdown``: the group was really freed, so nothing is left for the interpreter to
    tear down at exit.
    """
    tasks = "/proc/self/task"
    if not os.path.isdir(tasks):
        return []
    names = []
    for tid in os.listdir(tasks):
        try:
            with open(f"{tasks}/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:  # the thread ended while we looked
            continue
    return sorted(n for n in names if "gloo" in n or "nccl" in n.lower())


def _attempt_store(timeout: datetime.timedelta) -> dist.Store:
    """torchrun's key-value store, with keys private to this restart attempt.

    After ``torchrun --max-restarts N`` restarts the workers, the launcher's store still holds the
    previous attempt's connection keys; without a per-attempt prefix the new workers read them
    and dial dead processes ("Gloo connectFullMesh failed ... Connection refused").
    """
    store, _, _ = next(dist.rendezvous("env://", timeout=timeout))
    store.set_timeout(timeout)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"chase_deploy/attempt{attempt}/", store)


def _timeout_from_env() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise BadInput(f"{TIMEOUT_ENV}={raw!r}: must be a positive number of seconds")
    return value


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def sync_buffers(module: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    DDP broadcasts rank 0's buffers at the start of each training forward, but each rank then
    updates them from its own shard; evaluating or checkpointing without this would use a
    different model on every rank.
    """
    if not active():
        return
    for buf in module.buffers():
        dist.broadcast(buf, src=0)


# ---------------------------------------------------------------------------- rank 0 decides

_OK, _NONE, _BAD_INPUT, _FAILED = 0, 1, 2, 3


def from_main(produce: Callable[[], bytes | None], device: torch.device) -> bytes | None:
    """Run ``produce`` on rank 0 only and return its result on every rank.

    A ``BadInput`` raised on rank 0 is raised on every rank (each exits 2 with the same message);
    any other failure there becomes a RuntimeError on the others, so no rank waits for a message
    that will never come.
    """
    if not active():
        return produce()
    status, payload, error = _OK, b"", None
    if dist.get_rank() == 0:
        status, payload, error = _run_on_main(produce)
    header = torch.tensor([status, len(payload)], dtype=torch.int64, device=device)
    dist.broadcast(header, src=0)
    status, length = (int(v) for v in header.tolist())
    data = _broadcast_bytes(payload, length, device)
    if error is not None:
        raise error
    if status == _BAD_INPUT:
        raise BadInput(data.decode())
    if status == _FAILED:
        raise RuntimeError(f"rank 0 failed: {data.decode()}")
    return None if status == _NONE else data


def _run_on_main(produce: Callable[[], bytes | None]) -> tuple[int, bytes, BaseException | None]:
    try:
        result = produce()
    except BadInput as e:
        return _BAD_INPUT, str(e).encode(), e
    except Exception as e:
        return _FAILED, f"{type(e).__name__}: {e}".encode(), e
    return (_NONE, b"", None) if result is None else (_OK, result, None)


def _broadcast_bytes(payload: bytes, length: int, device: torch.device) -> bytes:
    if length == 0:
        return b""
    if dist.get_rank() == 0:
        buf = torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(device)
    else:
        buf = torch.empty(length, dtype=torch.uint8, device=device)
    dist.broadcast(buf, src=0)
    return buf.cpu().numpy().tobytes()


# ---------------------------------------------------------------------------- agreement

_CHUNK = 1 << 20
_MODULUS = 8191  # positional weights 1..8191 keep every partial sum far inside int64


def fingerprint(tensors: list[Tensor]) -> Tensor:
    """One int64 per tensor, exact and position-sensitive: equal on two ranks iff (almost surely)
    the tensors are bit-identical. Integer arithmetic, so it never differs by rounding."""
    if not tensors:
        return torch.zeros(0, dtype=torch.int64)
    span = min(max(t.numel() * t.element_size() for t in tensors), _CHUNK) + _MODULUS
    weights: dict[torch.device, Tensor] = {}
    sums = []
    for t in tensors:
        if t.device not in weights:
            steps = torch.arange(span, dtype=torch.int32, device=t.device)
            weights[t.device] = steps % _MODULUS + 1
        sums.append(_tensor_fingerprint(t, weights[t.device]))
    return torch.stack(sums)


def _tensor_fingerprint(t: Tensor, weights: Tensor) -> Tensor:
    flat = t.detach().reshape(-1)
    if flat.dtype == torch.bool:
        words = flat.view(torch.uint8)
    elif flat.element_size() == 1:
        words = flat
    else:
        words = flat.contiguous().view(torch.int16)  # every bit of any wider dtype
    total = torch.zeros((), dtype=torch.int64, device=words.device)
    for start in range(0, words.numel(), _CHUNK):
        chunk = words[start : start + _CHUNK]
        offset = start % _MODULUS
        # |word| < 2^15 and weight < 2^13: each product fits int32, the sum is taken in int64
        total += (chunk * weights[offset : offset + chunk.numel()]).sum(dtype=torch.int64)
    return total + words.numel()


def check_agreement(named: Mapping[str, Tensor], what: str, device: torch.device) -> None:
    """Raise RuntimeError naming the tensors on which the ranks differ; one all-reduce."""
    if not active() or not named:
        return
    names = list(named)
    fp = fingerprint([named[n] for n in names]).to(device)
    both = torch.cat([fp, -fp])
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    high, neg_low = both[: len(names)], both[len(names) :]
    differ = (high != -neg_low).nonzero().flatten().tolist()
    if differ:
        shown = ", ".join(names[i] for i in differ[:5])
        more = f" and {len(differ) - 5} more" if len(differ) > 5 else ""
        raise RuntimeError(
            f"ranks disagree {what} on {shown}{more}: the replicas diverged (a rank-dependent "
            f"seed or a nondeterministic update); training stops rather than continue on one of them"
        )


def shutdown() -> None:
    if active():
        dist.destroy_process_group()
