#!/usr/bin/env bash
# Table 1's levers on real faces (docs/faces.md): after scripts/faces_cpu.sh, train variants of MDE-REC10 under
# the faces-cpu profile outside the pipeline (into outputs/levers/), then probe their FC codes and measure how much the
# decoder uses them, beside the pipeline's REC10 and random weights (scripts/faces_diagnostics.py, tables
# results/faces-cpu/levers_*). The levers: fewer U-Net skip connections (model.skips: the decoder must take the face's
# coarse content through z), a larger FC layer, and more updates. About 25 minutes on 2 CPU cores.
#
#   bash scripts/faces_levers.sh [DATA_FOLDER] [STEPS]      # defaults: ../shared/data, 800 (the profile's)
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${1:-../shared/data}; STEPS=${2:-800}
[ -e outputs/runs/REC10/model.pt ] || { echo "faces_levers: outputs/runs/REC10/model.pt is missing: run scripts/faces_cpu.sh first" >&2; exit 2; }
declare -A LEVERS=(
  [REC10-skips1]="model.skips=1"                 # only the full-resolution skip: coarse content must pass through z
  [REC10-skips0]="model.skips=0"                 # a plain encoder-decoder: everything passes through z
  [REC10-fc2048]="model.fc_dim=2048"             # a 4x larger FC layer, every skip kept
  [REC10-x3]="train.steps=$((3 * STEPS))"        # 3x the updates, every skip kept
)
EXTRA=()
for name in REC10-skips1 REC10-skips0 REC10-fc2048 REC10-x3; do
  python -m mde.trainer --run REC10 --set profile=faces-cpu --set "data.source=$SRC" --set "train.steps=$STEPS" \
      --set ${LEVERS[$name]} --out "outputs/levers/$name"
  EXTRA+=("$name=outputs/levers/$name/model.pt")
done
python scripts/faces_diagnostics.py --usage-runs REC10 --probe-runs REC10 --prefix levers \
    --extra "$(IFS=,; echo "${EXTRA[*]}")"
