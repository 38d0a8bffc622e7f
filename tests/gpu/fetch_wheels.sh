#!/usr/bin/env bash
# Put the pure-Python wheels the GPU box lacks (tests/gpu/box.py: CARRIED, today onnx-graphsurgeon
# and onnxconverter-common) in tests/gpu/wheels/ (ignored by git). check.sh appends them to
# PYTHONPATH whenever a module it needs does not import; carry the folder to the box with the
# working tree (the device tool's `carry: ["tests/gpu/wheels"]`; about 0.2 MB).
#
#   bash tests/gpu/fetch_wheels.sh              # from the package index (pip download)
#   bash tests/gpu/fetch_wheels.sh --installed  # zipped from this machine's installation, offline
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-$(command -v python3 || command -v python)}
mkdir -p "$here/wheels"
if [ "${1:-}" = "--installed" ]; then
  "$python" "$here/box.py" pack "$here/wheels"
else
  # shellcheck disable=SC2046  # one word per distribution
  "$python" -m pip download --no-deps --only-binary=:all: --python-version 3.10 \
    -d "$here/wheels" $("$python" "$here/box.py" carried)
fi
for wheel in "$here"/wheels/*.whl; do
  case "$wheel" in
    *-none-any.whl) ;;
    *) echo "fetch_wheels: $wheel is not a pure-Python wheel; the box cannot import it from a zip" >&2
       exit 1 ;;
  esac
done
ls -l "$here/wheels"
