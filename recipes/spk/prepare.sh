#!/usr/bin/env bash
# The data of the speaker-encoder, WaveNet-decoder and streaming recipes: all of
# ../shared/data with speechocean762 (363 speakers), the 25 speechocean762
# speakers of heldout_speakers.txt held out whole, 5% of the others' utterances.
#   recipes/spk/prepare.sh DATA_DIR OUT_DIR      (does nothing if OUT_DIR is prepared)
set -euo pipefail
data=$1
out=$2
here=$(dirname "$0")
if [ ! -f "$out/prepare.json" ]; then
  speechvq prepare "$data/vctk:vctk" "$data/librispeech/test-other:librispeech" \
    "$data/librispeech/train-clean-100:librispeech" "$data/vcc2016:folder" \
    "$data/speechocean762:kaldi" "$out" --heldout 0.05 --f0-method dio \
    --heldout-speakers "$(paste -sd, "$here/heldout_speakers.txt")"
fi
