#!/usr/bin/env bash
# The imaging privacy-utility sweep of issue 15: each preset, non-private and sample-level
# DP at epsilon 1, 2, 4, 8 (delta 1e-5), over seeds; then the sweep report
# (CSV, PNG) of each preset.
#   scripts/imaging_sweep.sh [OUT_DIR]     (default multirun/imaging)
# Environment: PRESETS (default "breastmnist pneumoniamnist"), MODEL (default resnet18, the
# published width; resnet18_w16 for a CPU), SEEDS (default 0,1,2), EPSILONS (default
# 1,2,4,8), PYTHON (default .venv/bin/python). Accuracy does not depend on the secure
# aggregation scheme (CKKS adds an error below 1e-6 per coordinate), so the sweep runs
# secagg=plain chain=none; add secagg=ckks chain=inprocess to a single run to check.
# On a GPU, federation.device=auto uses it.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-multirun/imaging}
PYTHON=${PYTHON:-.venv/bin/python}
PRESETS=${PRESETS:-breastmnist pneumoniamnist}
MODEL=${MODEL:-resnet18}
SEEDS=${SEEDS:-0,1,2}
EPSILONS=${EPSILONS:-1,2,4,8}
for preset in $PRESETS; do
    common=(+experiment="$preset" model="$MODEL" secagg=plain chain=none federation.seed="$SEEDS")
    "$PYTHON" -m experiments.run -m "${common[@]}" dp=off \
        hydra.sweep.dir="$OUT/$preset/$MODEL/off"
    "$PYTHON" -m experiments.run -m "${common[@]}" dp=sample dp.target_epsilon="$EPSILONS" \
        hydra.sweep.dir="$OUT/$preset/$MODEL/dp"
    "$PYTHON" -m experiments.report "$OUT/$preset/$MODEL"
done
