#!/usr/bin/env bash
# "Train on your own data" through the project workflow: a fresh copy of the project in
# benchmarks/work/own_data/NAME, then `spacy project run` convert, train and evaluate with the given
# project vars, each step timed; the summary goes to benchmarks/work/results/own_data/NAME.json.
# Data paths may be relative to the current directory. Usage:
#   bash run_own_data.sh NAME --vars.train T --vars.dev D --vars.test E [--vars.max_epochs N ...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
name=$1; shift
source "$root/benchmarks/project_copy.sh"
dir=$root/benchmarks/work/own_data/$name
project_copy "$root" "$dir" "$@"
cd "$dir"
mkdir -p metrics && : > metrics/timings.tsv
for step in convert train evaluate; do
  start=$(date +%s)
  python -m spacy project run "$step" . "${args[@]}" 2>&1 | tee -a metrics/log.txt
  printf '%s\t%s\n' "$step" $(( $(date +%s) - start )) >> metrics/timings.tsv
done
out=$root/benchmarks/work/results/own_data
mkdir -p "$out"
python "$root/benchmarks/summarize_workflow.py" metrics/timings.tsv "$out/$name.json" "$@"
