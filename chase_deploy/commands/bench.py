"""``chase-deploy bench``: latency, throughput and speedup of models measured in one run."""

from __future__ import annotations

import click

from chase_deploy.commands.params import BatchSizes, FloatRange, IntRange


@click.command("bench")
@click.argument("models", nargs=-1, required=True, metavar="MODEL [MODEL ...]")
@click.option(
    "--backend",
    default="ort-cpu",
    metavar="NAME",
    show_default=True,
    help="ort-cpu | ort-cuda | ort-trt | tensorrt. Refused (exit 2) when it cannot run here.",
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
    help="ONNX Runtime intra-op threads [default: all available cores].",
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
    json_out: str | None,
    plot_out: str | None,
) -> None:
    """Benchmark MODELs (.onnx files or TensorRT engines) the same way, in one interleaved run.

    Per batch size the models are warmed up, then take turns in short slices (A B A B ...) so
    drift of the machine hits all alike. Each iteration is timed (host clock on CPU, CUDA events
    on GPU backends). The table shows median, mean, p90, p99 and min latency, throughput
    (batch / mean latency) and speedup (median latency of the first model / this one's).

    \b
    Examples:
      chase-deploy bench runs/quickstart/dense.onnx runs/quickstart/slim.onnx
      chase-deploy bench dense.onnx slim.onnx --batch 1,8,32 --threads 2 --json bench.json --plot bench.png
      chase-deploy bench dense.engine slim.engine --backend tensorrt --batch 8
    """
    from pathlib import Path

    from chase_deploy.backends import check_name
    from chase_deploy.bench import benchmark, format_table, write_results
    from chase_deploy.errors import BadInput
    from chase_deploy.writable import check_writable_file

    check_name(backend)
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
    )
    click.echo(format_table(result))
    try:
        write_results(result, json_out, plot_out)
    except OSError as e:
        raise BadInput(f"cannot write the results: {e}") from e
    for path in (json_out, plot_out):
        if path is not None:
            click.echo(f"wrote {path}", err=True)
