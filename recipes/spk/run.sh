#!/usr/bin/env bash
# The speaker-encoder model (issue 16, docs/speaker.md): all of ../shared/data
# with speechocean762 (363 speakers), 25 speechocean762 speakers held out whole
# (heldout_speakers.txt) for measuring on voices training never heard; the
# `small-sf-spk` model started from the shipped one.
#   recipes/spk/run.sh [DATA_DIR] [WORK_DIR] [STEPS]
# Re-running resumes.
set -euo pipefail
data=${1:-../shared/data}
work=${2:-runs/spk}
steps=${3:-6000}
here=$(dirname "$0")

"$here/prepare.sh" "$data" "$work/prepared"
if [ -f "$work/train/checkpoint.pt" ]; then
  speechvq train "$work/prepared" --out "$work/train" --resume --max-steps "$steps"
else
  speechvq train "$work/prepared" --out "$work/train" --config "$here/../configs/small-sf-spk.yaml" \
    --init-from small --max-steps "$steps"
fi
