"""``chase-deploy bench``: latency, throughput and speedup of models measured in one run."""

from __future__ import annotations

import click


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
    "batch",
    default="1,8,32",
    show_default=True,
    metavar="N,N,...",
    help="Batch sizes, comma separated.",
)
@click.option(
    "--warmup-ms",
    default="200",
    metavar="MS",
    show_default=True,
    help="Warm-up time per model and batch size.",
)
@click.option(
    "--duration-s",
    default="2",
    metavar="S",
    show_default=True,
    help="Measured time per model and batch size.",
)
@click.option(
    "--threads",
    default=None,
    metavar="N",
    help="ONNX Runtime intra-op threads [default: all available cores].",
)
@click.option("--json", "json_out", default=None, metavar="OUT", help="Write the results as JSON.")
@click.option("--plot", "plot_out", default=None, metavar="OUT.png", help="Write a PNG plot.")
def command(models, backend, batch, warmup_ms, duration_s, threads, json_out, plot_out):
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
    from chase_deploy.bench import benchmark, format_table, parse_batches, write_results
    from chase_deploy.engine import check_writable
    from chase_deploy.errors import BadInput

    check_name(backend)
    batches = parse_batches(batch)
    warmup = _number("--warmup-ms", warmup_ms, minimum=0.0)
    duration = _number("--duration-s", duration_s, minimum=0.0, strict=True)
    n_threads = None if threads is None else _positive_int("--threads", threads)
    if json_out is not None:
        check_writable(Path(json_out), "--json")
    if plot_out is not None:
        if Path(plot_out).suffix.lower() != ".png":
            raise BadInput(f"--plot {plot_out}: the plot is a PNG, give a path ending in .png")
        check_writable(Path(plot_out), "--plot")
    result = benchmark(
        list(models),
        backend=backend,
        batches=batches,
        warmup_ms=warmup,
        duration_s=duration,
        threads=n_threads,
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


def _number(option: str, text: str, minimum: float, strict: bool = False) -> float:
    from chase_deploy.errors import BadInput

    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if (
        not (value > minimum if strict else value >= minimum)
        or value != value
        or value == float("inf")
    ):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise BadInput(f"{option} {text!r}: give a number {bound}")
    return value


def _positive_int(option: str, text: str) -> int:
    from chase_deploy.errors import BadInput

    if not str(text).strip().isdigit() or int(text) < 1:
        raise BadInput(f"{option} {text!r}: give a positive integer")
    return int(text)
