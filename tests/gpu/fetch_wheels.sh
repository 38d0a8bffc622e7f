#!/usr/bin/env bash
# Put pytest's pure-Python wheels in tests/gpu/wheels/ (ignored by git), for a GPU box without
# pytest: check.sh puts them on PYTHONPATH as they are. Run on a machine with the package index;
# carry the folder to the box with the working tree (the device tool's `carry`).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python -m pip download --no-deps --only-binary=:all: -d "$here/wheels" \
  pytest pluggy iniconfig packaging pygments
ls -l "$here/wheels"
