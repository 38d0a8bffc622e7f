#!/usr/bin/env bash
# Reproduce recipes/fashion_mnist/README.md: every run, slim and benchmark, the tables and plots.
#
#   recipes/fashion_mnist/run_all.sh [RUNS_DIR] [JOBS]    # default runs/fmnist15, 2 jobs
#
# Training runs JOBS at a time with one thread each (OMP_NUM_THREADS=1), in this order:
#   1. the results table: dense, static, set, rigl, chase_unstructured, chase_sc05, chase_sc05_skip,
#      seeds 0, 1, 2 (21 runs)                                      -> RUNS/NAME/seedN
#   2. the Figure 1 sweep: chase_sc05(_skip) at S_c 0.2, 0.3, 0.4, 0.6, seed 0 (S_c 0.5 is the
#      seed-0 run of step 1)                                        -> RUNS/sweep/scX[_skip]
#   3. the channel-criterion study's source runs: chase_unstructured_d03, seeds 0, 1, 2
#                                                                   -> RUNS/chase_unstructured_d03/seedN
#   4. once those are done, the distillation study: chase_sc05_kd, chase_sc05_skip_kd,
#      chase_sc05_fromdense, chase_sc05_fromdense_kd, chase_sc05_d1_fromdense(_kd), seeds 0, 1, 2,
#      each from RUNS/dense/seedN
#                                                                   -> RUNS/NAME/seedN
# then slims every channel-pruned run and dense/seed0 (`--round-to 8`, and the sweep also with
# `--round-to 16` into slim16/: ONNX Runtime's AVX-512 kernels work in blocks of 16 channels),
# benchmarks the Figure 1 models in one interleaved ONNX Runtime CPU run (RUNS/fig1_bench.json),
# analyses chase_unstructured/seed0 (Figure 2), runs the channel-criterion study on the density-0.3
# runs (RUNS/ablate_d03, Table 2) and writes RUNS/results.md and RUNS/fig1.png. Each
# stage is skipped when its output exists, and an interrupted training resumes from its last
# epoch, so the script can simply be rerun.
set -uo pipefail
RUNS=${1:-runs/fmnist15}
JOBS=${2:-2}
HERE=$(cd "$(dirname "$0")" && pwd)
export RUNS HERE OMP_NUM_THREADS=1
mkdir -p "$RUNS/logs"

train_jobs() {  # one line per run: NAME RECIPE [KEY=VALUE ...]
  local seed r sc
  for seed in 0 1 2; do
    for r in dense static set rigl chase_unstructured chase_sc05 chase_sc05_skip; do
      echo "$r/seed$seed $r.yaml seed=$seed"
    done
  done
  for sc in 0.2 0.3 0.4 0.6; do
    echo "sweep/sc$sc chase_sc05.yaml seed=0 chase.channel_sparsity=$sc"
    echo "sweep/sc${sc}_skip chase_sc05_skip.yaml seed=0 chase.channel_sparsity=$sc"
  done
  for seed in 0 1 2; do
    echo "chase_unstructured_d03/seed$seed chase_unstructured_d03.yaml seed=$seed"
  done
}

distill_jobs() {  # after the dense runs: the rows of the distillation study (README "Starting ...")
  local seed dense
  for seed in 0 1 2; do
    dense="$RUNS/dense/seed$seed"
    echo "chase_sc05_kd/seed$seed chase_sc05_kd.yaml seed=$seed train.distill.teacher=$dense"
    echo "chase_sc05_skip_kd/seed$seed chase_sc05_skip_kd.yaml seed=$seed train.distill.teacher=$dense"
    echo "chase_sc05_fromdense/seed$seed chase_sc05_fromdense.yaml seed=$seed model.weights=$dense"
    echo "chase_sc05_fromdense_kd/seed$seed chase_sc05_fromdense_kd.yaml seed=$seed model.weights=$dense train.distill.teacher=$dense"
    echo "chase_sc05_d1_fromdense/seed$seed chase_sc05_d1_fromdense.yaml seed=$seed model.weights=$dense"
    echo "chase_sc05_d1_fromdense_kd/seed$seed chase_sc05_d1_fromdense_kd.yaml seed=$seed model.weights=$dense train.distill.teacher=$dense"
  done
}

train_one() {
  local name=$1 recipe=$2 sets=() kv
  shift 2
  for kv in "$@"; do sets+=(--set "$kv"); done
  [ -f "$RUNS/$name/final.pt" ] && return 0
  mkdir -p "$(dirname "$RUNS/logs/$name")"
  echo "$(date +%T) train $name"
  chase-deploy train "$HERE/$recipe" --out "$RUNS/$name" --resume auto --device cpu "${sets[@]}" \
    > "$RUNS/logs/$name.train.log" 2>&1 || { echo "FAILED train $name (see $RUNS/logs/$name.train.log)"; return 1; }
}

slim_one() {  # NAME ROUND_TO DIR
  local name=$1 round=$2 dir=$3
  [ -f "$RUNS/$name/final.pt" ] || return 0
  [ -f "$RUNS/$name/$dir/slim_report.json" ] && return 0
  echo "$(date +%T) slim $name --round-to $round"
  chase-deploy slim "$RUNS/$name/final.pt" --round-to "$round" --out "$RUNS/$name/$dir" \
    > "$RUNS/logs/$name.$dir.log" 2>&1 || { echo "FAILED slim $name --round-to $round"; return 1; }
}
export -f train_one slim_one

train_jobs | xargs -P "$JOBS" -L 1 bash -c 'train_one "$@"' _ || echo "some training failed"
distill_jobs | xargs -P "$JOBS" -L 1 bash -c 'train_one "$@"' _ || echo "some training failed"

SWEEP=()  # Figure 1: S_c 0.2 ... 0.6, without and with prune_skip
for sc in 0.2 0.3 0.4 0.5 0.6; do
  if [ "$sc" = 0.5 ]; then SWEEP+=(chase_sc05/seed0 chase_sc05_skip/seed0)
  else SWEEP+=("sweep/sc$sc" "sweep/sc${sc}_skip"); fi
done
{
  echo dense/seed0 8 slim
  for name in "${SWEEP[@]}"; do echo "$name 8 slim"; echo "$name 16 slim16"; done
  for seed in 1 2; do echo "chase_sc05/seed$seed 8 slim"; echo "chase_sc05_skip/seed$seed 8 slim"; done
} | xargs -P "$JOBS" -L 1 bash -c 'slim_one "$@"' _ || echo "some slimming failed"

# One interleaved benchmark of the full-width network (what every unstructured run deploys as)
# and the twenty slim networks of the sweep, one thread, so machine drift hits all alike.
if [ ! -f "$RUNS/fig1_bench.json" ]; then
  models=("$RUNS/dense/seed0/slim/dense.onnx")
  for dir in slim slim16; do
    for name in "${SWEEP[@]}"; do models+=("$RUNS/$name/$dir/slim.onnx"); done
  done
  echo "$(date +%T) bench"
  chase-deploy bench "${models[@]}" --batch 1,32 --threads 1 --duration-s 4 \
    --json "$RUNS/fig1_bench.json" > "$RUNS/logs/fig1_bench.log" 2>&1 || echo "FAILED bench"
fi

if [ ! -f "$RUNS/chase_unstructured/seed0/analysis/summary.md" ]; then
  chase-deploy analyze "$RUNS/chase_unstructured/seed0" > "$RUNS/logs/analyze.log" 2>&1
fi
# The paper's Table 2 on the density-0.3 runs: every criterion, one-shot, BN re-estimated, 3 seeds.
if [ ! -f "$RUNS/ablate_d03/ablate.md" ]; then
  echo "$(date +%T) ablate"
  chase-deploy ablate "$RUNS/chase_unstructured_d03/seed{seed}" --seeds 0,1,2 \
    --out "$RUNS/ablate_d03" > "$RUNS/logs/ablate_d03.log" 2>&1 || echo "FAILED ablate"
fi
python "$HERE/results_table.py" "$RUNS" --plot "$RUNS/fig1.png" > "$RUNS/results.md"
echo "$(date +%T) done: $RUNS/results.md, $RUNS/fig1.png, $RUNS/chase_unstructured/seed0/analysis/, $RUNS/ablate_d03/"
