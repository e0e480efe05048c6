#!/usr/bin/env bash
# The speaker-conditioned WaveNet decoder (issue 17, docs/wavenet-decoder.md):
# the speaker-encoder model's data (recipes/spk: all of ../shared/data with
# speechocean762, 25 speakers held out whole), the `small-sfwn-spk` model
# started from the shipped `small-spk` (everything but the post-filter WaveNet
# copied; its correction starts at zero), trained with the STFT, adversarial
# and feature-matching losses. Meant for a GPU (about 19 s a step at batch 4
# on one CPU thread); on a CPU, give it a few steps to check it runs.
#   recipes/sfwn/run.sh [DATA_DIR] [WORK_DIR] [STEPS]
# Re-running resumes.
set -euo pipefail
data=${1:-../shared/data}
work=${2:-runs/sfwn}
steps=${3:-20000}
here=$(dirname "$0")

"$here/../spk/prepare.sh" "$data" "$work/prepared"
if [ -f "$work/train/checkpoint.pt" ]; then
  speechvq train "$work/prepared" --out "$work/train" --resume --max-steps "$steps"
else
  speechvq train "$work/prepared" --out "$work/train" \
    --config "$here/../configs/small-sfwn-spk.yaml" --init-from small-spk --max-steps "$steps"
fi
