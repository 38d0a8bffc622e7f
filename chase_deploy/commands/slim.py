"""``chase-deploy slim``: physically remove pruned channels, verified lossless."""

from __future__ import annotations

from pathlib import Path

import click

from chase_deploy.commands.params import InputShape


@click.command("slim")
@click.argument(
    "source", metavar="CHECKPOINT|MODEL.onnx", type=click.Path(dir_okay=False, path_type=Path)
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Checkpoint: output directory (default: the checkpoint's). ONNX: the slim model file.",
)
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Channel plan JSON for MODEL.onnx (default: remove its exactly-zero channels).",
)
@click.option(
    "--round-to",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Keep extra next-best channels so every slimmed width is a multiple of N (still lossless).",
)
@click.option(
    "--opset", type=click.IntRange(min=18), default=None, help="ONNX opset of the export [18]."
)
@click.option(
    "--input-shape",
    type=InputShape(),
    default=None,
    metavar="N,C,H,W",
    help="Checkpoint: the export shape (overrides its input_shape). ONNX: the size verification "
    "feeds the model's dynamic height/width (default: the smallest common size it accepts).",
)
@click.option(
    "--exporter",
    type=click.Choice(["dynamo", "torchscript"]),
    default=None,
    help="torch.onnx exporter for checkpoints [dynamo].",
)
@click.option(
    "--allow-lossy", is_flag=True, help="Write the slim model even if its outputs differ."
)
def command(
    source: Path,
    out: Path | None,
    plan_path: Path | None,
    round_to: int,
    opset: int | None,
    input_shape: tuple[int, ...] | None,
    exporter: str | None,
    allow_lossy: bool,
) -> None:
    """Remove pruned channels in ONNX and verify the result with ONNX Runtime.

    \b
    From a checkpoint (writes dense.onnx, slim.onnx, dense.pt2, slim.pt2, slim_report.json;
    the .pt2 files are torch.export programs for `bench --backend torch-cpu|torch-cuda`):
      chase-deploy slim runs/quickstart/final.pt
      chase-deploy slim final.pt --out deploy/ --round-to 8 --input-shape 1,3,224,224
    From any ONNX model and a channel plan (writes SLIM.onnx and SLIM.report.json):
      chase-deploy slim model.onnx --plan channel_plan.json --out model.slim.onnx
      chase-deploy slim any_hw.onnx --plan plan.json --out slim.onnx --input-shape 1,3,224,224
    From a model pruned by any tool (removes the channels that are exactly zero):
      chase-deploy slim pruned.onnx --out pruned.slim.onnx

    Coupled layers a plan leaves out (a squeeze-excitation gate, the convs of a residual
    stream) are added with the channels the graph forces, and each addition is noted.

    Exits 2, writing nothing, if the plan does not fit the graph or the result is not lossless
    (unless --allow-lossy).
    """
    from chase_deploy import slim
    from train.errors import BadInput
    from train.run_dir import RunDir

    if plan_path is not None or source.suffix.lower() == ".onnx":
        if out is None:
            raise BadInput("--out SLIM.onnx is required when slimming an ONNX model")
        given = [n for n, v in (("--opset", opset), ("--exporter", exporter)) if v]
        if given:
            raise BadInput(
                f"{given[0]} applies to checkpoints only; an ONNX model is already exported"
            )
        report = slim.slim_onnx_file(
            source,
            plan_path,
            out,
            round_to=round_to,
            allow_lossy=allow_lossy,
            input_shape=input_shape,
        )
        written = [str(out), str(slim.report_path_for(out))]
    else:
        report = slim.slim_checkpoint(
            source,
            out,
            round_to=round_to,
            opset=opset or 18,
            input_shape=input_shape,
            exporter=exporter or "dynamo",
            allow_lossy=allow_lossy,
        )
        written = [
            report["onnx"]["dense"],
            report["onnx"]["slim"],
            *(p for p in (report["pt2"]["dense"], report["pt2"]["slim"]) if p),
            str(RunDir(Path(report["onnx"]["slim"]).parent).slim_report),
        ]
    click.echo(_summary(report))
    click.echo("wrote " + ", ".join(written))
    for line in report.get("notes", []):
        click.echo(f"note: {line}", err=True)
    missing = report.get("pt2", {}).get("missing")
    if missing:
        click.echo(f"note: {missing}", err=True)


def _summary(report: dict) -> str:
    flops, params = report["flops"], report["params"]
    status = "lossless" if report["lossless"] else "NOT lossless"
    ratio = f"{report['flop_ratio']:.2f}x" if report.get("flop_ratio") else "n/a"
    return (
        f"{status}: max_abs_diff {report['max_abs_diff']:.3g}; FLOPs {flops['dense'] / 1e9:.3f} G -> "
        f"{flops['slim'] / 1e9:.3f} G ({ratio}), sparse {flops['sparse'] / 1e9:.3f} G; "
        f"params {params['dense']:,} -> {params['slim']:,}"
    )
