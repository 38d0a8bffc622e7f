"""``chase-deploy quantize``: INT8 post-training quantization, calibrated and checked on data."""

from __future__ import annotations

from pathlib import Path

import click

from chase_deploy.commands.params import FloatRange, IntRange, OneOf
from chase_deploy.int8.calibration import DEFAULT_SAMPLES
from chase_deploy.int8.targets import METHODS, TARGETS


@click.command("quantize")
@click.argument("model", metavar="MODEL.onnx", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--calib",
    required=True,
    metavar="RUN_DIR|RECIPE",
    type=click.Path(path_type=Path),
    help="Where the data comes from: a run directory (its recipe.yaml) or a recipe file.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The int8 model [MODEL's stem + .int8.onnx]; the report goes to OUT with .json.",
)
@click.option(
    "--target",
    type=OneOf(TARGETS),
    default="cpu",
    show_default=True,
    help="cpu: uint8 activations, per-channel int8 weights (ONNX Runtime CPU); "
    "tensorrt: symmetric int8, zero points 0, Q/DQ where TensorRT fuses them.",
)
@click.option(
    "--method",
    type=OneOf(METHODS),
    default="minmax",
    show_default=True,
    help="Calibration: minmax | entropy | percentile (99.999).",
)
@click.option(
    "--calib-samples",
    "samples",
    type=IntRange(min=1, hint="a positive number of images"),
    default=DEFAULT_SAMPLES,
    show_default=True,
    help="Training images to calibrate on (seeded by the recipe's seed).",
)
@click.option(
    "--max-drop",
    type=FloatRange(min=0.0, hint="a number of top-1 points >= 0"),
    default=1.0,
    show_default=True,
    help="Largest top-1 drop (points) int8 may cost; beyond it nothing is written.",
)
@click.option("--allow-drop", is_flag=True, help="Write the int8 model whatever its top-1 drop.")
def command(
    model: Path,
    calib: Path,
    out: Path | None,
    target: str,
    method: str,
    samples: int,
    max_drop: float,
    allow_drop: bool,
) -> None:
    """INT8 post-training quantization of MODEL.onnx (ONNX Runtime, QDQ format).

    Calibrates on --calib-samples images of the training data of RUN_DIR's recipe (or RECIPE)
    under its evaluation transforms, measures top-1 of the fp32 and the int8 model on the whole
    validation set, and writes the int8 model and a JSON report (top-1 both ways and their
    agreement, target, method, samples, share of MACs in int8, sha256 of both files).

    \b
    Examples:
      chase-deploy quantize runs/quickstart/slim.onnx --calib runs/quickstart
      chase-deploy quantize dense.onnx --calib recipes/quickstart.yaml --out dense-int8.onnx
      chase-deploy quantize slim.onnx --calib runs/x --target tensorrt --method entropy
      chase-deploy build slim.int8.onnx          # a tensorrt-target model: an int8 engine

    Exits 2 and writes nothing when int8 loses more than --max-drop top-1 points (unless
    --allow-drop), on an already quantized model, on data that does not fit the model, on a
    run directory without data and on an unwritable output.
    """
    from chase_deploy.int8.quantize import Settings, quantize_file, report_path_for

    settings = Settings(target, method, samples, max_drop, allow_drop)
    report = quantize_file(model, calib, out, settings, log=click.echo)
    macs = report["int8_macs"]
    click.echo(
        f"top-1 fp32 {report['top1_fp32']:.2%} -> int8 {report['top1_int8']:.2%} "
        f"({report['drop_points']:+.2f} points drop, agreement {report['agreement']:.2%}, "
        f"{report['val_samples']} images); {macs['share']:.1%} of MACs in int8 "
        f"({macs['layers_int8']}/{macs['layers']} layers); "
        f"{report['bytes']['fp32']:,} -> {report['bytes']['int8']:,} bytes"
    )
    out_path = Path(report["int8_model"])
    click.echo(f"wrote {out_path}, {report_path_for(out_path)}")
