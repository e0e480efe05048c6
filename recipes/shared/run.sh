#!/usr/bin/env bash
# The shipped model's recipe: all of ../shared/data (VCTK p225-p228,
# LibriSpeech test-other and train-clean-100, VCC2016; ~68 min, 238 speakers),
# the `small-sf` model (source-filter decoder), then its prior over codes.
#   recipes/shared/run.sh [DATA_DIR] [WORK_DIR] [STEPS]
# Re-running resumes each stage. On a GPU machine the same commands use CUDA;
# under torchrun, DDP. (The shipped file's own lineage, which started from the
# earlier WaveNet model's encoder, is in speechvq/pretrained/README.md.)
set -euo pipefail
data=${1:-../shared/data}
work=${2:-runs/shared}
steps=${3:-6000}
here=$(dirname "$0")

if [ ! -f "$work/prepared/prepare.json" ]; then
  speechvq prepare "$data/vctk:vctk" "$data/librispeech/test-other:librispeech" \
    "$data/librispeech/train-clean-100:librispeech" "$data/vcc2016:folder" \
    "$work/prepared" --heldout 0.05 --f0-method harvest
fi
if [ -f "$work/train/checkpoint.pt" ]; then
  speechvq train "$work/prepared" --out "$work/train" --resume --max-steps "$steps"
else
  speechvq train "$work/prepared" --out "$work/train" --config "$here/../configs/small-sf.yaml" \
    --max-steps "$steps"
fi
if [ -f "$work/prior/checkpoint.pt" ]; then
  speechvq train-prior "$work/prepared" --model "$work/train/model.safetensors" \
    --out "$work/prior" --resume
else
  speechvq train-prior "$work/prepared" --model "$work/train/model.safetensors" \
    --out "$work/prior" --config "$here/../configs/prior-small.yaml"
fi
echo "model with its prior: $work/prior/model.safetensors"
