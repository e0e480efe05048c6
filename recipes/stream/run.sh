#!/usr/bin/env bash
# The streaming model (issue 18, docs/streaming.md): the speaker-encoder
# recipe's data (recipes/spk: all of ../shared/data with speechocean762, 25
# speakers held out whole), the causal `small-stream` started from `small`,
# then its packet code (the code bigram table `.svqs` packets are coded with,
# `train-prior --bigram`: seconds once the codes are extracted);
# WORK_DIR/packet/model.safetensors is the model to ship.
#   recipes/stream/run.sh [DATA_DIR] [WORK_DIR] [STEPS] [CONFIG] [INIT]
# The streaming speaker-encoder model (`small-stream-spk`, a live voice changer
# to any voice) is the same recipe from `small-spk`:
#   recipes/stream/run.sh ../shared/data runs/stream-spk 6000 \
#     recipes/configs/small-stream-spk.yaml small-spk
# Re-running resumes.
set -euo pipefail
data=${1:-../shared/data}
work=${2:-runs/stream}
steps=${3:-6000}
here=$(dirname "$0")
config=${4:-$here/../configs/small-stream.yaml}
init=${5:-small}

"$here/../spk/prepare.sh" "$data" "$work/prepared"
if [ -f "$work/train/checkpoint.pt" ]; then
  speechvq train "$work/prepared" --out "$work/train" --resume --max-steps "$steps"
else
  speechvq train "$work/prepared" --out "$work/train" --config "$config" \
    --init-from "$init" --max-steps "$steps"
fi
speechvq train-prior "$work/prepared" -m "$work/train/model.safetensors" -o "$work/packet" --bigram
