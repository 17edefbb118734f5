#!/usr/bin/env bash
# The accuracy benchmark, all of it: 3 systems x (CoNLL-2003, WNUT-17), one at a time, each saved in
# benchmarks/results/accuracy/ as it finishes (rerun single ones with benchmarks/accuracy.py run),
# then the table written into BENCHMARKS.md. About 3 hours on 2 CPU cores; minutes on a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
for dataset in wnut17 conll2003; do
  for system in bert_ner spacy_ner hf; do
    python benchmarks/accuracy.py run "$system" "$dataset" "$@"
  done
done
python benchmarks/accuracy.py table --write BENCHMARKS.md
