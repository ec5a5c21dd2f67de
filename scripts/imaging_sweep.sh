#!/usr/bin/env bash
# The imaging privacy-utility sweep of issue 15: each preset, non-private and sample-level
# DP at epsilon 1, 2, 4, 8 (delta 1e-5), over seeds; then the sweep report
# (CSV, PNG) of each preset.
#   scripts/imaging_sweep.sh [OUT_DIR]     (default multirun/imaging)
# Environment: PRESETS (default "breastmnist pneumoniamnist"), MODEL (default: the preset's
# own, rfnet; e.g. resnet18 on a GPU, with EXTRA="federation.optimizer=adam
# federation.lr=0.001"), EXTRA (more overrides for every run), SEEDS (default 0,1,2),
# EPSILONS (default 1,2,4,8), PYTHON (default .venv/bin/python). Accuracy does not depend on the secure
# aggregation scheme (CKKS adds an error below 1e-6 per coordinate), so the sweep runs
# secagg=plain chain=none; add secagg=ckks chain=inprocess to a single run to check.
# On a GPU, federation.device=auto uses it.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-multirun/imaging}
PYTHON=${PYTHON:-.venv/bin/python}
PRESETS=${PRESETS:-breastmnist pneumoniamnist}
MODEL=${MODEL:-}
read -r -a extra <<< "${EXTRA:-}"
SEEDS=${SEEDS:-0,1,2}
EPSILONS=${EPSILONS:-1,2,4,8}
for preset in $PRESETS; do
    common=(+experiment="$preset" secagg=plain chain=none federation.seed="$SEEDS" "${extra[@]}")
    if [ -n "$MODEL" ]; then common+=(model="$MODEL"); fi
    folder="$OUT/$preset/${MODEL:-preset}"
    "$PYTHON" -m experiments.run -m "${common[@]}" dp=off hydra.sweep.dir="$folder/off"
    "$PYTHON" -m experiments.run -m "${common[@]}" dp=sample dp.target_epsilon="$EPSILONS" \
        hydra.sweep.dir="$folder/dp"
    "$PYTHON" -m experiments.report "$folder"
done
