#!/usr/bin/env bash
# The whole MDE study on real faces at CPU scale (docs/faces.md): every MDE run the studies read, trained
# under profiles/faces-cpu.yaml on CelebA, then the classifier, the Fig. 7 grid, the Fig. 8 ablation, probing
# (Tables 1-2), the occlusions (Table 3), the figures and the report, with the claims table on top. The tables,
# provenance, claims and the time of each stage are kept in results/faces-cpu/ (figures stay in outputs/: they
# show real faces). About 61 minutes on 2 CPU cores, nothing else running (measured: results/faces-cpu/stage_times.md).
#
#   bash scripts/faces_cpu.sh [DATA_FOLDER]     # default ../shared/data
#
# DATA_FOLDER holds CelebA: the official img_align_celeba/ with its annotation files, or celeba-subset.tar.gz (with
# list_landmarks_align_celeba_mtcnn.txt beside it: detected landmarks standing in for the official file).
# Extra `-S key=value` settings for `dvc exp run` can follow the folder, e.g. -S train.steps=2000.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${1:-../shared/data}; shift || true
if [ ! -d "$SRC" ] || { [ ! -d "$SRC/img_align_celeba" ] && [ ! -e "$SRC/celeba-subset.tar.gz" ] && [ ! -e "$SRC/img_align_celeba.zip" ] \
     && [ -z "$(find "$SRC" -maxdepth 3 -type d -name img_align_celeba -print -quit 2>/dev/null)" ]; }; then
  echo "faces-cpu: no CelebA in '$SRC': it needs img_align_celeba/ (or img_align_celeba.zip, or celeba-subset.tar.gz) in that folder; pass the folder as the first argument" >&2
  exit 2
fi
# every MDE run a study reads (the CE report's runs are not part of this study)
TARGETS=$(python -c "
from mde.params import side_section
st = side_section('studies'); names = []
for s in ('grid', 'ablation', 'probing', 'occlusion', 'figures'):
    r = st[s]['runs']; names += list(r.values()) if isinstance(r, dict) else list(r)
    names += list((st[s].get('fig1') or {}).values())
print(' '.join('train@' + n for n in dict.fromkeys(names)))")
mkdir -p outputs/logs results/faces-cpu
dvc exp run -S profile=faces-cpu -S "data.source=$SRC" -S studies.test_images=500 \
    -S studies.probing.probe.finetune_steps=1000 "$@" \
    $TARGETS classifier grid ablation probing occlusion figures 2>&1 \
  | python -m mde.results --time outputs/logs/faces-cpu-times.json
python -m mde.html_report --outputs outputs --out outputs/report/index.html
python -m mde.results --collect results/faces-cpu --outputs outputs --times outputs/logs/faces-cpu-times.json \
    --data "CelebA ($SRC), profile faces-cpu"
