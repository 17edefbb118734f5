#!/usr/bin/env bash
# The GPU checks (benchmarks/project.yml's `gpu` command), most important first, each under its own time limit so that a short lease
# still returns what it measured (the inference benchmark also rewrites its JSON after each system):
#
#   bash benchmarks/run_gpu_checks.sh PIPELINE ENCODER_DIR [OUT_DIR]
#
# PIPELINE: a trained pipeline directory whose ../../corpus/dev.spacy exists (the dev F1 checks);
# ENCODER_DIR: a Hugging Face encoder directory (e.g. MiniLM) for the training-throughput runs.
# A PIPELINE trained before spacy_bert_ner.CasingFeatures.v1 names spaCy's casing layers, which run
# doc by doc: replace that block of its config.cfg as the README says (same weights, same entities)
# to measure this release's inference.
# Results: OUT_DIR (default benchmarks/work/gpu; `python record.py gpu-...` records them). On the device tool's machine, set up as
# ../shared/gpu/README.md says first; the whole script takes about 8 minutes on an H100.
set -uo pipefail
cd "$(dirname "$0")/.."
PIPELINE=$1; ENCODER=$2; OUT=${3:-benchmarks/work/gpu}
mkdir -p "$OUT"
run() { local limit=$1; shift; echo "=== $*"; timeout "$limit" "$@" 2>&1 | grep -v Warning | tail -40; }
run 300 "${PYTHON:-python3}" benchmarks/inference_speed.py "$PIPELINE" --gpu-id 0 --n-sents 5000 \
  --output "$OUT/inference_h100.json"
run 60 "${PYTHON:-python3}" benchmarks/casing_features.py --gpu-id 0 \
  --output "$OUT/casing_features_h100.json"
run 150 "${PYTHON:-python3}" benchmarks/training_speed.py --gpu-id 0 --encoder "$ENCODER" \
  --output "$OUT/training_speed_h100.json"
run 120 "${PYTHON:-python3}" benchmarks/training_speed.py --gpu-id 0 --encoder "$ENCODER" --mixed-precision \
  --output "$OUT/training_speed_h100_mixed_precision.json"
run 240 "${PYTHON:-python3}" benchmarks/device_agreement.py "$PIPELINE" --gpu-id 0 --n-sents 5000 \
  --mixed-precision --output "$OUT/device_agreement.json"
