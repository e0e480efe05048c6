#!/usr/bin/env bash
# The WaveNet decoder on a CPU (issue 17, docs/wavenet-decoder.md): the data of
# recipes/spk; stage 1 puts a 32-channel post-filter WaveNet after `small-spk`'s
# source-filter decoder and trains the decoder alone with the STFT loss (codes,
# F0 predictor and speaker encoder frozen, so the prior stays valid); stage 2
# goes on with the discriminators. About 1.1 s and 2.2 s a step on 2 cores.
# Measured (docs/wavenet-decoder.md): neither stage beat the source-filter
# decoder at these lengths. This is how to reproduce that, and a start for longer runs.
#   recipes/sfwn/run-cpu.sh [DATA_DIR] [WORK_DIR] [STEPS1] [STEPS2]
# Re-running resumes the stage it stopped in.
set -euo pipefail
data=${1:-../shared/data}
work=${2:-runs/sfwn-cpu}
steps1=${3:-3000}
steps2=${4:-2000}
here=$(dirname "$0")
configs="$here/../configs"

"$here/../spk/prepare.sh" "$data" "$work/prepared"
stage() {  # stage RUN CONFIG INIT STEPS
  if [ -f "$work/$1/checkpoint.pt" ]; then
    speechvq train "$work/prepared" --out "$work/$1" --resume --max-steps "$4"
  else
    speechvq train "$work/prepared" --out "$work/$1" --config "$configs/$2" \
      --init-from "$3" --max-steps "$4"
  fi
}
stage stft small-sfwn-spk-cpu.yaml small-spk "$steps1"
stage adv small-sfwn-spk-cpu-adv.yaml "$work/stft/model.safetensors" "$steps2"
