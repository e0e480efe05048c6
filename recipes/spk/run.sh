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

if [ ! -f "$work/prepared/prepare.json" ]; then
  speechvq prepare "$data/vctk:vctk" "$data/librispeech/test-other:librispeech" \
    "$data/librispeech/train-clean-100:librispeech" "$data/vcc2016:folder" \
    "$data/speechocean762:kaldi" "$work/prepared" --heldout 0.05 --f0-method dio \
    --heldout-speakers "$(paste -sd, "$here/heldout_speakers.txt")"
fi
if [ -f "$work/train/checkpoint.pt" ]; then
  speechvq train "$work/prepared" --out "$work/train" --resume --max-steps "$steps"
else
  speechvq train "$work/prepared" --out "$work/train" --config "$here/../configs/small-sf-spk.yaml" \
    --init-from small --max-steps "$steps"
fi
