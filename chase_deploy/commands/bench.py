"""``chase-deploy bench``: latency, throughput and speedup of models measured in one run."""

from __future__ import annotations

import click

from chase_deploy.commands.params import BatchSizes, FloatRange, IntRange, OneOf


@click.command("bench")
@click.argument("models", nargs=-1, required=True, metavar="MODEL [MODEL ...]")
@click.option(
    "--backend",
    default="ort-cpu",
    metavar="NAME",
    show_default=True,
    help="ort-cpu | ort-cuda | ort-trt | tensorrt (ONNX, engines) | torch-cpu | torch-cuda "
    "(.pt2). Refused (exit 2) when it cannot run here.",
)
@click.option(
    "--batch",
    "batches",
    type=BatchSizes(),
    default="1,8,32",
    show_default=True,
    metavar="N,N,...",
    help="Batch sizes, comma separated.",
)
@click.option(
    "--warmup-ms",
    type=FloatRange(min=0, hint="a number >= 0"),
    default=200,
    metavar="MS",
    show_default=True,
    help="Warm-up time per model and batch size.",
)
@click.option(
    "--duration-s",
    type=FloatRange(min=0, min_open=True, hint="a number > 0"),
    default=2,
    metavar="S",
    show_default=True,
    help="Measured time per model and batch size.",
)
@click.option(
    "--threads",
    type=IntRange(min=1, hint="a positive integer"),
    default=None,
    metavar="N",
    help="ONNX Runtime (or torch-cpu) intra-op threads [default: all available cores].",
)
@click.option(
    "--precision",
    type=OneOf(["fp32", "bf16", "fp16"]),
    default=None,
    help="torch-*: weights and inputs in this precision; tensorrt: ONNX inputs built in it "
    "[fp32]. ONNX Runtime runs the model's own (fp32).",
)
@click.option("--channels-last", is_flag=True, help="torch-*: run in channels_last memory format.")
@click.option(
    "--compile",
    "compile_",
    is_flag=True,
    help="torch-*: torch.compile (Inductor) instead of eager; the first run of each batch size "
    "compiles, before timing.",
)
@click.option(
    "--check-outputs",
    is_flag=True,
    help="Before timing each batch size, require every model's outputs to equal the first "
    "model's (within the precision's tolerance); exit 2 otherwise.",
)
@click.option("--json", "json_out", default=None, metavar="OUT", help="Write the results as JSON.")
@click.option("--plot", "plot_out", default=None, metavar="OUT.png", help="Write a PNG plot.")
def command(
    models: tuple[str, ...],
    backend: str,
    batches: list[int],
    warmup_ms: float,
    duration_s: float,
    threads: int | None,
    precision: str | None,
    channels_last: bool,
    compile_: bool,
    check_outputs: bool,
    json_out: str | None,
    plot_out: str | None,
) -> None:
    """Benchmark MODELs (.onnx, TensorRT engines, or .pt2 programs) the same way, in one
    interleaved run.

    Per batch size the models are warmed up, then take turns in short slices (A B A B ...) so
    drift of the machine hits all alike. Each iteration is timed (host clock on CPU, CUDA events
    on GPU backends; torch-cuda replays a CUDA graph). The table shows median, mean, p90, p99 and
    min latency, throughput (batch / mean latency) and speedup (median latency of the first
    model / this one's).

    \b
    Examples:
      chase-deploy bench runs/quickstart/dense.onnx runs/quickstart/slim.onnx
      chase-deploy bench dense.onnx slim.onnx --batch 1,8,32 --threads 2 --json bench.json --plot bench.png
      chase-deploy bench dense.engine slim.engine --backend tensorrt --batch 8
      chase-deploy bench dense.pt2 slim.pt2 --backend torch-cpu --check-outputs
      chase-deploy bench dense.pt2 slim.pt2 --backend torch-cuda --precision bf16 --channels-last --compile --batch 1,32,256
    """
    from pathlib import Path

    from chase_deploy.backends import check_name
    from chase_deploy.bench import benchmark, format_table, write_results
    from chase_deploy.writable import check_writable_file
    from train.errors import BadInput

    check_name(backend)
    options = _backend_options(backend, precision, channels_last, compile_)
    if json_out is not None:
        check_writable_file(Path(json_out), "--json")
    if plot_out is not None:
        if Path(plot_out).suffix.lower() != ".png":
            raise BadInput(f"--plot {plot_out}: the plot is a PNG, give a path ending in .png")
        check_writable_file(Path(plot_out), "--plot")
    result = benchmark(
        list(models),
        backend=backend,
        batches=batches,
        warmup_ms=warmup_ms,
        duration_s=duration_s,
        threads=threads,
        log=lambda line: click.echo(line, err=True),
        options=options,
        check_outputs=check_outputs,
    )
    click.echo(format_table(result))
    try:
        write_results(result, json_out, plot_out)
    except OSError as e:
        raise BadInput(f"cannot write the results: {e}") from e
    for path in (json_out, plot_out):
        if path is not None:
            click.echo(f"wrote {path}", err=True)


def _backend_options(
    backend: str, precision: str | None, channels_last: bool, compile_: bool
) -> dict:
    """The flags that configure ``backend``; BadInput for a flag it does not take."""
    from chase_deploy.backends import TORCH_BACKENDS
    from train.errors import BadInput

    options: dict = {}
    if precision is not None:
        if backend in TORCH_BACKENDS or backend == "tensorrt":
            options["precision"] = precision
        elif precision != "fp32":
            raise BadInput(
                f"--precision {precision}: the ONNX Runtime backends run the model's own "
                f"precision (fp32); use --backend tensorrt or torch-cpu/torch-cuda"
            )
    for flag, value, key in (
        ("--channels-last", channels_last, "channels_last"),
        ("--compile", compile_, "compile"),
    ):
        if value:
            if backend not in TORCH_BACKENDS:
                raise BadInput(f"{flag} applies to the torch-cpu and torch-cuda backends only")
            options[key] = True
    return options
