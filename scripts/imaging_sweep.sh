#!/usr/bin/env bash
# The imaging privacy-utility sweep of issue 15: each preset, non-private and sample-level
# DP at epsilon 1, 2, 4, 8 (delta 1e-5), over seeds; where the preset has a non-private
# counterpart (+experiment=PRESET_nonprivate: the best non-private recipe, a CNN), that too,
# so the figure shows both non-private levels as dashed lines (the private recipe without
# noise, and the best non-private one); then the sweep report (CSV, PNG) of each preset.
#   scripts/imaging_sweep.sh [OUT_DIR]     (default multirun/imaging)
# Environment: PRESETS (default "breastmnist pneumoniamnist"), MODEL (default: the preset's
# own, rfnet; e.g. resnet18 on a GPU, with EXTRA="federation.optimizer=adam
# federation.lr=0.001"), EXTRA (more overrides for every run of the private preset),
# EXTRA_NONPRIVATE (more overrides for the non-private preset's runs), SEEDS (default 0,1,2),
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
read -r -a extra_nonprivate <<< "${EXTRA_NONPRIVATE:-}"
SEEDS=${SEEDS:-0,1,2}
EPSILONS=${EPSILONS:-1,2,4,8}
for preset in $PRESETS; do
    common=(+experiment="$preset" secagg=plain chain=none federation.seed="$SEEDS" "${extra[@]}")
    if [ -n "$MODEL" ]; then common+=(model="$MODEL"); fi
    folder="$OUT/$preset/${MODEL:-preset}"
    "$PYTHON" -m experiments.run -m "${common[@]}" dp=off hydra.sweep.dir="$folder/off"
    "$PYTHON" -m experiments.run -m "${common[@]}" dp=sample dp.target_epsilon="$EPSILONS" \
        hydra.sweep.dir="$folder/dp"
    if [ -f "conf/experiment/${preset}_nonprivate.yaml" ]; then
        "$PYTHON" -m experiments.run -m +experiment="${preset}_nonprivate" secagg=plain \
            chain=none federation.seed="$SEEDS" "${extra_nonprivate[@]}" \
            hydra.sweep.dir="$folder/off_nonprivate"
    fi
    "$PYTHON" -m experiments.report "$folder"
done
