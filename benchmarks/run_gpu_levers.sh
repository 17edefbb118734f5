#!/usr/bin/env bash
# Issue 14's levers on one GPU: every (dataset, variant, seed) of benchmarks/accuracy.py at once,
# one process each with one torch thread (a training step is host-bound: the GPU has room for
# many), then the CoNLL-2003 models fed one sentence per Doc, then issue 12's GPU inference check
# (speed against transformers' pipeline, and the entities against fp32 on the CPU) on the base
# CoNLL-2003 model of seed 0:
#
#   bash benchmarks/run_gpu_levers.sh ENCODER_DIR [OUT_DIR]
#
# Results (accuracy JSON, training logs, nvidia-smi samples, inference JSON): OUT_DIR, default
# benchmarks/results/gpu/levers. Settings through the environment: VARIANTS (names in SETS below),
# SEEDS, DATASETS (dataset:epochs), TRAIN_LIMIT (seconds each training may take), GPU_ID (-1 runs
# everything on the CPU, for a smoke test with EXTRA="--limit 100"), PYTHON (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
ENCODER=$1
OUT=${2:-benchmarks/results/gpu/levers}
VARIANTS=${VARIANTS:-"base ls01 llrd08 avg"}
SEEDS=${SEEDS:-"0 1"}
DATASETS=${DATASETS:-"conll2003:4 wnut17:8"}
TRAIN_LIMIT=${TRAIN_LIMIT:-400}
GPU_ID=${GPU_ID:-0}
EXTRA=${EXTRA:-}
PYTHON=${PYTHON:-python3}
declare -A SETS=(
  [base]=""
  [ls01]="--set components.bert_ner.label_smoothing=0.1"
  [llrd08]="--set training.optimizer.@optimizers=spacy_bert_ner.Adam.v2 --set training.optimizer.layer_lr_decay=0.8"
  [avg]="--set training.optimizer.@optimizers=spacy_bert_ner.Adam.v2 --set training.optimizer.use_averages=true"
)
mkdir -p "$OUT/accuracy" "$OUT/logs"
if [ "$GPU_ID" -ge 0 ]; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 15 \
    > "$OUT/logs/nvidia_smi.csv" 2>&1 &
  SMI=$!
fi
export OMP_NUM_THREADS=1
"$PYTHON" -c "import numpy, spacy, spacy_bert_ner.evaluation" || exit 1
pids=()
for dataset_epochs in $DATASETS; do
  dataset=${dataset_epochs%%:*}
  epochs=${dataset_epochs##*:}
  for variant in $VARIANTS; do
    for seed in $SEEDS; do
      name=bert_ner-gpu-$variant-s$seed
      # shellcheck disable=SC2086  # SETS and EXTRA hold several arguments
      timeout "$TRAIN_LIMIT" "$PYTHON" benchmarks/accuracy.py run bert_ner "$dataset" \
        --epochs "$epochs" --name "$name" --gpu-id "$GPU_ID" --encoder "$ENCODER" \
        --results-dir "$OUT/accuracy" --set system.seed="$seed" ${SETS[$variant]} $EXTRA \
        > "$OUT/logs/${dataset}__$name.log" 2>&1 &
      pids+=($!)
    done
  done
done
wait "${pids[@]}"
echo "trainings done: $(ls "$OUT/accuracy" | wc -l) results"
for run in benchmarks/work/*__bert_ner-gpu-*; do
  cp "$run/train_log.jsonl" "$OUT/logs/$(basename "$run").train_log.jsonl" 2>/dev/null
done
for variant in $VARIANTS; do
  for seed in $SEEDS; do
    name=bert_ner-gpu-$variant-s$seed
    [ -f "$OUT/accuracy/conll2003__$name.json" ] || continue
    timeout 90 "$PYTHON" benchmarks/accuracy.py evaluate \
      "benchmarks/work/conll2003__$name/training/model-last" conll2003 --name "$name-sentences" \
      --n-sents 1 --epochs 4 --gpu-id "$GPU_ID" --results-dir "$OUT/accuracy" \
      > "$OUT/logs/sentences__$name.log" 2>&1 &
    pids+=($!)
  done
done
wait "${pids[@]}"
[ -n "${SMI:-}" ] && kill "$SMI"
echo "evaluations done: $(ls "$OUT/accuracy" | wc -l) results"
base=benchmarks/work/conll2003__bert_ner-gpu-base-s0/training/model-last
if [ "$GPU_ID" -ge 0 ] && [ -d "$base" ]; then
  unset OMP_NUM_THREADS
  timeout "${INFERENCE_LIMIT:-110}" "$PYTHON" benchmarks/inference_speed.py "$base" --gpu-id "$GPU_ID" \
    --n-sents 5000 --repeats 1 --systems ours,ours-cpu,hf-pipeline \
    --output "$OUT/inference_h100.json" 2>&1 | grep -v Warning | tail -8
fi
