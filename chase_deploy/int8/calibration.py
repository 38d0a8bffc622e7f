"""Calibration and validation data for int8, from a run directory or a recipe.

The calibration set is ``samples`` images of the recipe's *training* data under its *evaluation*
transforms (no crop, no flip: what the deployed model sees), drawn by the training loader's own
seeded permutation (``train.data``: the order of epoch 0 under the recipe's seed), so the same
source and count always calibrate on the same images. Top-1 is measured on the recipe's
validation set. No loader is duplicated here: ``build_data`` with ``data.augment`` off gives both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from train.config import Recipe, load_recipe
from train.data import DataBundle, build_data
from train.errors import BadInput
from train.run_dir import RunDir

DEFAULT_SAMPLES = 512
CALIB_BATCH = 64  # images per calibration batch fed to ONNX Runtime


@dataclass(frozen=True)
class CalibrationSource:
    """``--calib``: where the recipe came from (a run directory or a recipe file) and the recipe."""

    path: Path
    kind: str  # "run" or "recipe"
    recipe: Recipe


def resolve_source(path: str | Path) -> CalibrationSource:
    """The recipe behind ``--calib``: a run directory's recipe.yaml, or a recipe file."""
    path = Path(path)
    if path.is_dir():
        files = RunDir(path)
        if not files.recipe.is_file():
            raise BadInput(
                f"--calib {path}: run directory without data (no recipe.yaml naming its dataset); "
                "give the --out of `chase-deploy train` or `run`, or a recipe file"
            )
        return CalibrationSource(path, "run", load_recipe(files.recipe))
    if path.is_file():
        return CalibrationSource(path, "recipe", load_recipe(path))
    raise BadInput(f"--calib {path}: no such run directory or recipe file")


def load_data(recipe: Recipe, samples: int, batch: int | None = None) -> DataBundle:
    """The recipe's data with evaluation transforms on the training split too; calibration
    batches of ``batch`` images (a model's fixed batch size), else of at most CALIB_BATCH."""
    size = batch or min(CALIB_BATCH, samples)
    cfg = dataclasses.replace(recipe.data, augment=False, batch_size=size)
    return build_data(cfg, recipe.seed)


def usable_samples(data: DataBundle) -> int:
    """Training images calibration can draw: the whole batches of the seeded permutation."""
    return len(data.train) * data.train.batch_size


def calibration_batches(data: DataBundle, samples: int) -> Iterator[np.ndarray]:
    """Exactly ``samples`` training images, float32 NCHW, in batches of at most CALIB_BATCH.

    Raises BadInput up front when the training split cannot give that many.
    """
    loader = data.train
    available = usable_samples(data)
    if samples > available:
        raise BadInput(
            f"--calib-samples {samples}: the training data has {loader.num_samples} images, "
            f"{available} usable for calibration; give --calib-samples {available} or fewer"
        )

    def batches() -> Iterator[np.ndarray]:
        left = samples
        for x, _ in loader.batches(0):
            yield x[:left].numpy().astype(np.float32, copy=False)
            left -= min(left, len(x))
            if left == 0:
                return

    return batches()


class CalibrationReader(CalibrationDataReader):
    """ONNX Runtime's calibration interface over ``calibration_batches``."""

    def __init__(self, batches: Iterator[np.ndarray], input_name: str) -> None:
        self._batches = batches
        self.input_name = input_name
        self.samples = 0  # images handed out so far

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._batches, None)
        if x is None:
            return None
        self.samples += len(x)
        return {self.input_name: x}
