#!/usr/bin/env bash
# Prepare a VCTK folder and train the `small` model on it, end to end.
#   recipes/vctk/run.sh VCTK_DIR [WORK_DIR] [CONFIG]
# VCTK_DIR is the corpus as it ships (holding wav48/) or its wav48/ folder.
# Re-running resumes: preparation is skipped once done, training continues.
set -euo pipefail
vctk=${1:?usage: recipes/vctk/run.sh VCTK_DIR [WORK_DIR] [CONFIG]}
work=${2:-runs/vctk}
config=${3:-$(dirname "$0")/../configs/small.yaml}

if [ ! -f "$work/prepared/prepare.json" ]; then
  speechvq prepare "$vctk:vctk" "$work/prepared" --heldout 0.05
fi
if [ -f "$work/train/checkpoint.pt" ]; then
  speechvq train "$work/prepared" --out "$work/train" --resume
else
  speechvq train "$work/prepared" --out "$work/train" --config "$config"
fi
speechvq info --model "$work/train/model.safetensors"
