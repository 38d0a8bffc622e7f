#!/usr/bin/env bash
# The GPU check: one run on the lendable H100/H200 box (docs/gpu-check.md).
#
#   OUT=/some/dir bash tests/gpu/check.sh              # on the GPU box ($OUT comes back)
#   OUT=/tmp/gpu-out bash tests/gpu/check.sh --dry-run # anywhere: the same steps on the CPU,
#                                                      # tiny sizes, eager only
#
# Steps, all inside one budget (CHECK_BUDGET_S, default 280 s; the contract is <= 5 minutes; the
# tests may take 30 % of it, prepare.py 50 %, the benchmark what is left):
#   0. imports: the modules the check needs (tests/gpu/box.py: pytest, onnx_graphsurgeon,
#      onnxconverter_common). The box lacks the last two: whenever one does not import, the
#      wheels in tests/gpu/wheels/ (CHECK_WHEELS; fetch_wheels.sh puts them there) are appended
#      to PYTHONPATH as they are (pure-Python wheels import from the zip). If one is still
#      missing the check stops at once, naming it.
#   1. the gpu-marked pytest tests (of the test modules that have any) -> $OUT/gpu_tests.xml
#   2. tests/gpu/prepare.py: dense / slim / slim --round-to 8 ResNet-50 as .pt2 (CPU, verified)
#   3. tests/gpu/bench_resnet50.py: torch-cuda, bf16, channels_last, batch 1/32/256, eager then
#      torch.compile (each model loaded, and compiled, once per mode), rotated inputs, a
#      correctness gate before each timed phase -> $OUT/bench.json, rewritten after every phase
#   4. tests/gpu/summary.py -> $OUT/check.json (status ok / incomplete / failed) and the table
# Everything printed also goes to $OUT/check.log. The interpreter is python3 (the one with torch
# on the box; PYTHON overrides); the project comes from PYTHONPATH; nothing is installed. The
# .pt2 files (~100 MB each) go to a temporary folder, not to $OUT.
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
python=${PYTHON:-$(command -v python3 || command -v python)}
wheels=${CHECK_WHEELS:-$here/wheels}
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
work=$(mktemp -d "${TMPDIR:-/tmp}/chase-gpu-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
steps="$OUT/steps.tsv"
: > "$steps"
rm -f "$OUT/gpu_tests.xml" "$OUT/prepare.json" "$OUT/bench.json" "$OUT/check.json"
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

summarize() {
  "$python" "$here/summary.py" --out "$OUT" --seconds $(($(date +%s) - start)) "${dry_flag[@]}"
}

echo "chase-deploy GPU check $( [ "$dry" = 1 ] && echo '(dry run, CPU)' ) at $(date -u +%FT%TZ)"
echo "root $root, OUT $OUT, budget ${budget} s, python $python"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
"$python" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"

# 0. The modules the check needs; the carried wheels when one is missing.
missing=$("$python" "$here/box.py" missing)
if [ -n "$missing" ]; then
  added=()
  for wheel in "$wheels"/*.whl; do
    [ -e "$wheel" ] && PYTHONPATH="$PYTHONPATH:$wheel" && added+=("$(basename "$wheel")")
  done
  echo "== imports: $missing missing here; appended ${#added[@]} wheel(s) from $wheels: ${added[*]:-none}"
  missing=$("$python" "$here/box.py" missing)
fi
if [ -n "$missing" ]; then
  echo "== imports: still missing: $missing. Run 'bash tests/gpu/fetch_wheels.sh' where the package index is, and carry tests/gpu/wheels/ with the tree"
  printf 'imports\tmissing: %s\t0\n' "$missing" >> "$steps"
  summarize
  exit 1
fi
printf 'imports\t0\t0\n' >> "$steps"

# 1. GPU-marked tests, from the modules that have any (collecting the rest would only cost time).
mapfile -t gpu_modules < <(cd "$root" && grep -l "pytest.mark.gpu" tests/test_*.py)
(cd "$root" && step gpu_tests $((budget * 3 / 10)) "$python" -m pytest -m gpu -o addopts=-ra -p no:cacheprovider \
  --junitxml "$OUT/gpu_tests.xml" -q "${gpu_modules[@]}")

# 2. The three programs.
step prepare $((budget / 2)) "$python" "$here/prepare.py" --out "$work" "${dry_flag[@]}"
[ -f "$work/prepare.json" ] && cp "$work/prepare.json" "$OUT/prepare.json"

# 3. The benchmark, in what is left of the budget (it plans its phases to fit; if the timeout
#    ends it anyway, bench.json keeps every finished phase and the check says "incomplete").
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
summarize
