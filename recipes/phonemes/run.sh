#!/usr/bin/env bash
# Do a model's codes line up with phonemes? (VQ-VAE §4.3) on the aligned VCTK files.
#
#   recipes/phonemes/run.sh [MODEL]        # from the repository root
#
# MODEL is a model file or a shipped model's name (default: the shipped model).
# DATA (default ../shared/data/vctk) must hold wav48/ and lab/mono/; OUT
# (default runs/phonemes) receives one report folder per setting.
set -euo pipefail

MODEL=${1:-${MODEL:-}}
DATA=${DATA:-../shared/data/vctk}
OUT=${OUT:-runs/phonemes}
model_args=()
[[ -n "$MODEL" ]] && model_args=(--model "$MODEL")

if [[ ! -d "$DATA/wav48" || ! -d "$DATA/lab/mono" ]]; then
    echo "run.sh: $DATA needs wav48/ and lab/mono/ (set DATA=...)" >&2
    exit 2
fi

# Every frame at the model's rate (250 Hz), then pooled to the paper's 25 Hz,
# then runs of one code merged into segments.
speechvq analyze-phonemes "$DATA/wav48" --alignments "$DATA/lab/mono" "${model_args[@]}" \
    --out "$OUT/frames" --force
speechvq analyze-phonemes "$DATA/wav48" --alignments "$DATA/lab/mono" "${model_args[@]}" \
    --out "$OUT/pool10" --pool 10 --force
speechvq analyze-phonemes "$DATA/wav48" --alignments "$DATA/lab/mono" "${model_args[@]}" \
    --out "$OUT/merged" --merge-repeats --force

echo "reports: $OUT/{frames,pool10,merged}/report.md"
