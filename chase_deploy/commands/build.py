"""``chase-deploy build``: a TensorRT engine from an ONNX model, with its provenance sidecar."""

from __future__ import annotations

import click

from chase_deploy.commands.params import BatchProfile, IntRange, OneOf
from train.config import PRECISIONS


@click.command("build")
@click.argument("model", metavar="MODEL.onnx")
@click.option(
    "--out", default=None, metavar="ENGINE", help="Engine path [default: MODEL with .engine]."
)
@click.option(
    "--precision",
    type=OneOf(PRECISIONS),
    default="fp32",
    metavar="NAME",
    show_default=True,
    help="fp32 | fp16 | bf16.",
)
@click.option(
    "--batch",
    "profile",
    type=BatchProfile(),
    default=None,
    metavar="MIN:OPT:MAX",
    help="Optimization profile of the batch axis [default: 1:8:32, or the model's fixed batch].",
)
@click.option(
    "--workspace-mib",
    type=IntRange(min=1, hint="a positive integer"),
    default=1024,
    metavar="MIB",
    show_default=True,
    help="Builder workspace limit.",
)
@click.option(
    "--timing-cache", default=None, metavar="FILE", help="Reuse and update kernel timings."
)
def command(
    model: str,
    out: str | None,
    precision: str,
    profile: tuple[int, int, int] | None,
    workspace_mib: int,
    timing_cache: str | None,
) -> None:
    """Build a TensorRT engine from MODEL.onnx and write ENGINE plus ENGINE.json.

    The sidecar records the TensorRT version, GPU name and compute capability, precision,
    profile and the sha256 of the ONNX file; `bench` refuses engines built by another TensorRT
    or for another GPU. The network is strongly typed on TensorRT 10 and 11 alike, so fp16/bf16
    builds an fp16/bf16 copy of the ONNX model (fp32 inputs and outputs, BatchNorm kept fp32);
    no builder precision flags are set. An int8 Q/DQ model from `quantize --target tensorrt`
    builds an int8 engine by explicit quantization (no --precision; the sidecar records int8);
    a `--target cpu` model (uint8) is refused. Needs TensorRT and an NVIDIA GPU: without them it
    exits 2 and says which is missing.

    \b
    Examples:
      chase-deploy build runs/quickstart/slim.onnx
      chase-deploy build slim.onnx --out slim-fp16.engine --precision fp16 --batch 1:8:32
      chase-deploy build dense.onnx --timing-cache trt.cache --workspace-mib 2048
      chase-deploy quantize slim.onnx --calib runs/x --target tensorrt && chase-deploy build slim.int8.onnx
    """
    from pathlib import Path

    from chase_deploy.backends.trt.loader import build_engine

    out_path = Path(out) if out is not None else Path(model).with_suffix(".engine")
    path = build_engine(
        model,
        out_path,
        precision=precision,
        batch=profile,
        workspace_mib=workspace_mib,
        timing_cache=timing_cache,
    )
    click.echo(f"wrote {path} and {path.name}.json")
