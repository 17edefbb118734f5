#!/usr/bin/env bash
# Real run of the project workflow (issue: CoNLL-2003, embedded MiniLM), each step timed, then a
# summary JSON in benchmarks/results/. Usage: bash benchmarks/run_workflow.sh [NAME] [extra weasel args]
# e.g. bash benchmarks/run_workflow.sh conll2003_minilm_gpu --vars.gpu_id 0
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:-conll2003_minilm_cpu}; shift || true
timings=metrics/timings.tsv
mkdir -p metrics && : > "$timings"
for step in convert train evaluate package; do
  start=$(date +%s)
  python -m spacy project run "$step" . --force "$@"
  printf '%s\t%s\n' "$step" $(( $(date +%s) - start )) >> "$timings"
done
python benchmarks/summarize_workflow.py "$timings" "benchmarks/results/$name.json" "$@"
