"""Wall-time overhead of the Chase controller over the same dense SGD loop (CPU, opt-in).

    python tests/perf/chase_overhead.py [--models resnet50_cifar,vgg19] [--batch 16] [--steps 40]

Two copies of the model (same init) train on the same CIFAR-shaped synthetic batches, one with the
controller and one without. Blocks of ``--block`` steps alternate between the two so machine drift
hits both alike; the ratio is total Chase time over total dense time. The exploration period ΔT_p
and the channel period ΔT are scaled down to ``--block`` steps so every Chase block holds one
exploration and one channel event: this over-weights the events by (real ΔT_p / block) compared with
a real run, so the script also prints the per-event costs and the ratio extrapolated to ΔT_p = ΔT =
1000 (the paper's setting). Not collected by pytest (no test functions; runs under __main__ only).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def main() -> None:
    args = _parse()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
        f"{args.steps} measured steps per arm, blocks of {args.block}"
    )
    for name in args.models.split(","):
        _bench(name, args)


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet50_cifar,vgg19")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=40, help="measured steps per arm")
    p.add_argument("--block", type=int, default=10, help="steps per alternating block = ΔT_p = ΔT")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--real-period", type=int, default=1000, help="ΔT_p for the extrapolation")
    return p.parse_args()


def _bench(name: str, args: argparse.Namespace) -> None:
    from chase_deploy.graph.analysis import derive_groups
    from train.chase import Chase
    from train.config import ChaseConfig
    from train.models import create_model

    torch.manual_seed(0)
    dense_model = create_model(name, num_classes=10)
    chase_model = create_model(name, num_classes=10)
    chase_model.load_state_dict(dense_model.state_dict())
    dense_opt = _sgd(dense_model)
    chase_opt = _sgd(chase_model)
    total_steps = 2 * (args.steps + args.warmup) + 10
    cfg = ChaseConfig(
        density=0.1,
        update_every=args.block,
        channel_every=args.block,
        channel_sparsity=0.5,
        beta=0.5,
        growth_extra=0.05,
    )
    # One "epoch" = the whole run; tau_stop at the end, so all events are phase A + channel events.
    chase = Chase(
        chase_model,
        derive_groups(chase_model, (3, 32, 32)),
        cfg,
        chase_opt,
        steps_per_epoch=total_steps,
        epochs=2,
        explore_until=1,
        seed=0,
    )
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)

    timer = _EventTimer(chase)
    for _ in range(args.warmup):
        _step(dense_model, dense_opt, x, y, None, 0)
    step = 0
    for _ in range(args.warmup):
        step += 1
        _step(chase_model, chase_opt, x, y, chase, step)
    dense_time = chase_time = 0.0
    done = 0
    while done < args.steps:
        n = min(args.block, args.steps - done)
        t0 = time.perf_counter()
        for _ in range(n):
            _step(dense_model, dense_opt, x, y, None, 0)
        dense_time += time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(n):
            step += 1
            _step(chase_model, chase_opt, x, y, timer, step)
        chase_time += time.perf_counter() - t0
        done += n
    remask = _remask_cost(chase)
    per_dense = dense_time / args.steps
    per_chase = chase_time / args.steps
    events = timer.explorations + timer.channel_events
    event_cost = timer.event_seconds - remask * len(timer.event_steps)
    # Extrapolate: per-step re-mask always, one exploration and one channel event per real period.
    steady = per_chase - event_cost / args.steps
    per_event = {k: (sum(v) / len(v) if v else 0.0) for k, v in timer.by_kind.items()}
    real = steady + (per_event["exploration"] + per_event["channels"]) / args.real_period
    print(
        f"\n{name}: {chase.total:,} masked weights, density {cfg.density}, "
        f"{chase.channels_total} prunable channels"
    )
    print(f"  dense        {per_dense * 1000:9.1f} ms/step")
    print(
        f"  chase        {per_chase * 1000:9.1f} ms/step  ratio {per_chase / per_dense:.3f}x  "
        f"({events} events in {args.steps} steps: {timer.explorations} explorations, "
        f"{timer.channel_events} channel events)"
    )
    print(f"  re-mask      {remask * 1000:9.1f} ms per step (weights + momentum, fused)")
    print(f"  exploration  {per_event['exploration'] * 1000:9.1f} ms per event")
    print(f"  channels     {per_event['channels'] * 1000:9.1f} ms per event")
    print(f"  extrapolated ratio at ΔT_p = ΔT = {args.real_period}: {real / per_dense:.3f}x")
    m = chase.epoch_metrics()
    print(
        f"  after the run: density {m['density']:.4f}, channel sparsity {m['channel_sparsity']:.4f}"
    )


def _sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)


def _step(model, opt, x, y, chase, t: int) -> None:
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if chase is not None:
        chase.before_step(t)
    opt.step()
    if chase is not None:
        chase.after_step(t)


class _EventTimer:
    """Wraps the controller: times after_step calls that produced events."""

    def __init__(self, chase) -> None:
        self.chase = chase
        self.event_seconds = 0.0
        self.event_steps: list[int] = []
        self.by_kind: dict[str, list[float]] = {"exploration": [], "channels": []}
        self.explorations = self.channel_events = 0

    def before_step(self, t: int) -> None:
        self.chase.before_step(t)

    def after_step(self, t: int) -> list[dict]:
        t0 = time.perf_counter()
        events = self.chase.after_step(t)
        took = time.perf_counter() - t0
        if events:
            self.event_seconds += took
            self.event_steps.append(t)
            kinds = [e["event"] for e in events]
            self.explorations += kinds.count("exploration")
            self.channel_events += kinds.count("channels")
            for k in kinds:
                self.by_kind[k].append(took / len(kinds))
        return events


def _remask_cost(chase, reps: int = 5) -> float:
    chase._remask()
    t0 = time.perf_counter()
    for _ in range(reps):
        chase._remask()
    return (time.perf_counter() - t0) / reps


if __name__ == "__main__":
    main()
