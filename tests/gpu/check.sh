#!/usr/bin/env bash
# The GPU check: one run on the lendable H100/H200 box (docs/gpu-check.md).
#
#   OUT=/some/dir bash tests/gpu/check.sh            # on the GPU box ($OUT comes back)
#   OUT=/tmp/gpu-out bash tests/gpu/check.sh --dry-run   # anywhere: the same steps on the CPU,
#                                                        # tiny sizes, eager only
#
# Steps, all inside one budget (CHECK_BUDGET_S, default 280 s; the contract is <= 5 minutes):
#   1. the gpu-marked pytest tests                       -> $OUT/gpu_tests.xml
#   2. tests/gpu/prepare.py: dense / slim / slim --round-to 8 ResNet-50 as .pt2 (CPU, verified)
#   3. tests/gpu/bench_resnet50.py: torch-cuda, bf16, channels_last, batch 1/32/256, eager then
#      torch.compile, a correctness gate before each timed phase -> $OUT/bench.json
#   4. tests/gpu/summary.py                              -> $OUT/check.json (and the table)
# Everything printed also goes to $OUT/check.log. The project comes from PYTHONPATH; nothing is
# installed. Without pytest on the box, wheels placed in tests/gpu/wheels/ (see fetch_wheels.sh)
# are put on PYTHONPATH as they are (pure-Python wheels import from the zip).
# The .pt2 files (~100 MB each) go to a temporary folder, not to $OUT.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dry=0
case "${1:-}" in
  --dry-run) dry=1 ;;
  "") ;;
  *) echo "usage: OUT=DIR bash tests/gpu/check.sh [--dry-run]" >&2; exit 2 ;;
esac
OUT=${OUT:-$root/gpu-check-out}
mkdir -p "$OUT"
log="$OUT/check.log"
: > "$log"
exec > >(tee -a "$log") 2>&1

budget=${CHECK_BUDGET_S:-280}
start=$(date +%s)
left() { echo $((budget - ($(date +%s) - start))); }
python=${PYTHON:-$(command -v python || command -v python3)}
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
work=$(mktemp -d "${TMPDIR:-/tmp}/chase-gpu-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
steps="$OUT/steps.tsv"
: > "$steps"
dry_flag=()
[ "$dry" = 1 ] && dry_flag=(--dry-run)

step() {  # step NAME TIMEOUT_S COMMAND...: run with a time limit, record rc and seconds
  local name=$1 limit=$2
  shift 2
  local t0 rc
  t0=$(date +%s)
  echo "== $name (limit ${limit} s, $(left) s of the budget left)"
  timeout --kill-after=5 "$limit" "$@"
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" >> "$steps"
  echo "== $name: exit $rc after $(($(date +%s) - t0)) s"
  return 0
}

echo "chase-deploy GPU check $( [ "$dry" = 1 ] && echo '(dry run, CPU)' ) at $(date -u +%FT%TZ)"
echo "root $root, OUT $OUT, budget ${budget} s"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
"$python" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"

# 1. GPU-marked tests. Modules that need packages the box lacks fail to collect; the GPU tests
#    live in modules that need only torch, numpy and onnx.
if ! "$python" -c "import pytest" 2> /dev/null; then
  for wheel in "$here"/wheels/*.whl; do
    [ -e "$wheel" ] && PYTHONPATH="$PYTHONPATH:$wheel"
  done
fi
if "$python" -c "import pytest" 2> /dev/null; then
  (cd "$root" && step gpu_tests 100 "$python" -m pytest -m gpu -o addopts=-ra -p no:cacheprovider \
    --continue-on-collection-errors --junitxml "$OUT/gpu_tests.xml" -q tests)
else
  echo "== gpu_tests: pytest is not installed and tests/gpu/wheels/ has none; not run"
  printf 'gpu_tests\tno-pytest\t0\n' >> "$steps"
fi

# 2. The three programs.
step prepare 150 "$python" "$here/prepare.py" --out "$work" "${dry_flag[@]}"
[ -f "$work/prepare.json" ] && cp "$work/prepare.json" "$OUT/prepare.json"

# 3. The benchmark, in what is left of the budget (it plans its phases to fit).
remaining=$(($(left) - 10))
if [ -f "$work/prepare.json" ] && [ "$remaining" -gt 20 ]; then
  modes=eager,compiled
  [ "$dry" = 1 ] && modes=${CHECK_DRY_MODES:-eager}
  step bench "$remaining" "$python" "$here/bench_resnet50.py" --prepared "$work" \
    --out "$OUT/bench.json" --budget-s $((remaining - 10)) --modes "$modes" "${dry_flag[@]}"
else
  echo "== bench: not run (no prepared models, or ${remaining} s left)"
  printf 'bench\tnot-run\t0\n' >> "$steps"
fi

# 4. One JSON with everything, and the table.
"$python" "$here/summary.py" --out "$OUT" --seconds $(($(date +%s) - start)) "${dry_flag[@]}"
