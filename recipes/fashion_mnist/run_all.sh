#!/usr/bin/env bash
# Reproduce recipes/fashion_mnist/README.md: train the five recipes one after another, slim and
# benchmark each, analyse the S_c 0.5 run and run the criterion study on the unstructured one.
#
#   recipes/fashion_mnist/run_all.sh [RUNS_DIR]      # default runs/fmnist, about 1 h on 2 cores
#
# Each stage is skipped when its output exists, so an interrupted script can simply be rerun.
set -euo pipefail
RUNS=${1:-runs/fmnist}
HERE=$(dirname "$0")
NAMES=(dense chase_unstructured chase_sc05 static rigl)
mkdir -p "$RUNS/logs"

for name in "${NAMES[@]}"; do
  if [ ! -f "$RUNS/$name/final.pt" ]; then
    echo "train $name"
    chase-deploy train "$HERE/$name.yaml" --out "$RUNS/$name" --resume auto --device cpu \
      > "$RUNS/logs/$name.train.log" 2>&1
  fi
  if [ ! -f "$RUNS/$name/slim/slim_report.json" ]; then
    echo "slim $name"
    chase-deploy slim "$RUNS/$name/final.pt" --round-to 8 --out "$RUNS/$name/slim" \
      > "$RUNS/logs/$name.slim.log" 2>&1
  fi
done

for name in "${NAMES[@]}"; do
  if [ ! -f "$RUNS/$name/bench.json" ]; then
    echo "bench $name"
    chase-deploy bench "$RUNS/$name/slim/dense.onnx" "$RUNS/$name/slim/slim.onnx" --batch 1,32 \
      --threads 2 --duration-s 3 --json "$RUNS/$name/bench.json" > "$RUNS/logs/$name.bench.log" 2>&1
  fi
done

chase-deploy analyze "$RUNS/chase_sc05"
chase-deploy analyze "$RUNS/chase_unstructured"
chase-deploy ablate "$RUNS/chase_unstructured" \
  --criteria umm,ws,mmm,random,umm_reverse,ws_reverse,mmm_reverse --channel-sparsity 0.1,0.2,0.3,0.5
