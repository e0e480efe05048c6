#!/usr/bin/env bash
# The shipped model's recipe: all of ../shared/data (VCTK p225-p228,
# LibriSpeech test-other and train-clean-100, VCC2016; ~68 min, 238 speakers).
#   recipes/shared/run.sh [DATA_DIR] [WORK_DIR]
# On a GPU machine the same command uses CUDA; under torchrun, DDP.
set -euo pipefail
data=${1:-../shared/data}
work=${2:-runs/shared}
here=$(dirname "$0")

if [ ! -f "$work/prepared/prepare.json" ]; then
  speechvq prepare "$data/vctk:vctk" "$data/librispeech/test-other:librispeech" \
    "$data/librispeech/train-clean-100:librispeech" "$data/vcc2016:folder" \
    "$work/prepared" --heldout 0.05 --f0-method harvest
fi
if [ -f "$work/train/checkpoint.pt" ]; then
  speechvq train "$work/prepared" --out "$work/train" --resume
else
  speechvq train "$work/prepared" --out "$work/train" --config "$here/../configs/small.yaml"
fi
