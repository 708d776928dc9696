#!/usr/bin/env bash
# Reference check (issue 2): base all-MiniLM-L6-v2 on SciFact test and STS-B test at 64/128/256/384 dims.
# Expected: SciFact nDCG@10 0.645 at 384 dims (the published MTEB figure), STS-B Spearman 82.03.
# Usage: bash benchmarks/reference_base.sh [DATA_DIR]   (default ../shared/data; about 8 min on 2 CPU cores)
set -euo pipefail
DATA="${1:-${MRL_DATA:-../shared/data}}"
cd "$(dirname "$0")/.."
mrl eval --model default --beir "$DATA/scifact" --split test --dims 64,128,256,full \
    --sts "$DATA/stsbenchmark/sts-test.csv" --out benchmarks/results/scifact-base.json
