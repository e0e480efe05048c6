#!/usr/bin/env bash
# Held-out measurements of a speaker-encoder model (issue 16, docs/speaker.md),
# codec2 and Opus in the same runs:
#   recipes/spk/eval.sh MODEL NAME [DATA_DIR] [WORK_DIR]
# writes reports/NAME-unseen (13 speakers training never heard, 2 files each),
# reports/NAME-seen (held-out utterances of 12 training speakers) and
# reports/NAME-convert (8 unseen sources converted one-shot to 5 unseen
# targets: first file >= 3 s the reference, the other 4 judge the result).
# The files are listed in eval_files.tsv; the folders are symbolic links to them.
set -euo pipefail
model=$1
name=$2
data=$(realpath "${3:-../shared/data}")
work=${4:-runs/spk}
here=$(dirname "$0")

eval_dir="$work/eval"
if [ ! -d "$eval_dir" ]; then
  tail -n +2 "$here/eval_files.tsv" | while IFS=$'\t' read -r set speaker path; do
    mkdir -p "$eval_dir/$set/$speaker"
    ln -sf "$data/$path" "$eval_dir/$set/$speaker/"
  done
fi
speechvq evaluate "$eval_dir/unseen" -m "$model" -o "reports/$name-unseen" -f
speechvq evaluate "$eval_dir/seen" -m "$model" -o "reports/$name-seen" -f
speechvq evaluate "$eval_dir/convert-sources" -m "$model" -o "reports/$name-convert" -f \
  --convert-to-wav "$eval_dir/convert-targets" --baselines none --metrics speaker
