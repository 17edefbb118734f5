#!/usr/bin/env bash
# What the workflow ships is what was trained, on any machine: `spacy project run all` in a fresh
# copy of the project (work/shipped/NAME), then the pipeline it packaged installed into a fresh
# virtual environment from its packages/ folder alone, loaded by name from another folder, offline,
# and scored on the test set there, beside model-last of the same run. Writes
# work/results/shipped/NAME.json. Data paths may be relative to the current directory. Usage:
#   bash shipped.sh NAME --vars.train T --vars.dev D --vars.test E [--vars.max_epochs N ...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
name=$1; shift
source "$here/project_copy.sh"
dir=$here/work/shipped/$name
project_copy "$root" "$dir" "$@"
cd "$dir"
start=$(date +%s)
# `install` (the last step) goes to a folder of the run, not this environment.
PIP_TARGET=$dir/site python -m spacy project run all . "${args[@]}" 2>&1 | tee workflow.log
seconds=$(( $(date +%s) - start ))
python -m spacy evaluate training/model-last corpus/test.spacy --output metrics/test_last.json
# A fresh environment, shared by the runs (its packages from the public index), with the wheels
# of this run only.
venv=$here/work/shipped/venv
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q torch==2.13.0; }
"$venv/bin/pip" uninstall -q -y en_bert_ner spacy-bert-ner 2>/dev/null || true
"$venv/bin/pip" install -q packages/*/dist/*.whl
(cd /tmp && HF_HUB_OFFLINE=1 "$venv/bin/python" -m spacy evaluate en_bert_ner \
  "$dir/corpus/test.spacy" --output "$dir/metrics/test_installed.json")
python "$here/summarize_shipped.py" "$dir" "$here/work/results/shipped/$name.json" "$seconds" "$@"
