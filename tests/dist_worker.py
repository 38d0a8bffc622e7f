"""Run by tests/test_distributed.py under torchrun: exercises train.distributed's collectives on
gloo and writes what each rank saw to OUTDIR/rank<N>.json (not collected by pytest)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from torch import nn

from train.distributed import (
    check_agreement,
    from_main,
    init_distributed,
    live_process_group_threads,
    shutdown,
    sync_buffers,
)
from train.errors import BadInput

CPU = torch.device("cpu")


def _outcome(fn) -> str:
    try:
        fn()
    except RuntimeError as e:
        return f"RuntimeError: {e}"
    except BadInput as e:
        return f"BadInput: {e}"
    return "ok"


def _state(rank: int, *, flip_bit: bool, nudge: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)  # the same tensors on every rank ...
    mask = torch.rand(64, 32, 3, 3, generator=g) < 0.3
    weight = torch.randn(64, 32, 3, 3, generator=g)
    if rank == 1 and flip_bit:  # ... unless this rank is told to diverge
        mask.view(-1)[1234] = ~mask.view(-1)[1234]
    if rank == 1 and nudge:
        weight.view(-1)[99] = torch.nextafter(weight.view(-1)[99], torch.tensor(1e9))
    return {"conv.weight": weight, "mask conv.weight": mask, "steps": torch.tensor(5)}


def main(out: Path) -> None:
    info = init_distributed(CPU)
    rank = info.rank
    result: dict[str, object] = {"rank": rank, "world": info.world}

    result["agree_same"] = _outcome(
        lambda: check_agreement(_state(rank, flip_bit=False, nudge=False), "in a test", CPU)
    )
    result["agree_mask_bit"] = _outcome(
        lambda: check_agreement(_state(rank, flip_bit=True, nudge=False), "in a test", CPU)
    )
    result["agree_weight_ulp"] = _outcome(
        lambda: check_agreement(_state(rank, flip_bit=False, nudge=True), "in a test", CPU)
    )

    data = from_main(lambda: os.urandom(300_000), CPU)  # differs per call: only rank 0 runs it
    result["bytes_sha"] = hashlib.sha256(data or b"").hexdigest()
    result["none"] = from_main(lambda: None, CPU) is None

    def refuse() -> bytes:
        raise BadInput("--resume x: no such checkpoint")

    result["bad_input"] = _outcome(lambda: from_main(refuse, CPU))

    bn = nn.BatchNorm1d(3)
    with torch.no_grad():
        bn.running_mean.fill_(float(rank + 1))
    sync_buffers(bn)
    result["running_mean"] = bn.running_mean.tolist()

    ddp = nn.parallel.DistributedDataParallel(nn.Linear(3, 2))  # first import of torch._dynamo
    ddp(torch.ones(4, 3)).sum().backward()
    result["threads_with_ddp"] = live_process_group_threads()
    del ddp
    shutdown()
    result["threads_after_shutdown"] = live_process_group_threads()
    (out / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
