#!/usr/bin/env bash
# Pack what a short GPU session needs to train the WaveNet decoder (issue 17,
# docs/gpu.md) into .kit/, under an upload cap: a FLAC subset of the prepared
# corpus (`speechvq pack`) and the wheels the GPU machine's Python lacks. The
# shipped models the run does not use are taken out of the working tree (git
# keeps them; `restore` puts them back), since the whole tree travels.
#   recipes/gpu/kit.sh [PREPARED] [CAP_MIB]     default runs/spk/prepared (recipes/spk/prepare.sh), 64
#   recipes/gpu/kit.sh restore
# Then, on the GPU machine, in a copy of this tree with .kit/whl and .kit/data:
#   bash recipes/gpu/device.sh          (MINUTES, OUT: see there)
set -euo pipefail
aside=(speechvq/pretrained/speechvq-small.safetensors
  speechvq/pretrained/speechvq-small-stream.safetensors
  speechvq/pretrained/speechvq-small-stream-spk.safetensors)
if [ "${1:-}" = restore ]; then
  git checkout -- "${aside[@]}"
  echo "restored ${#aside[@]} models"
  exit 0
fi
prepared=${1:-runs/spk/prepared}
cap=$(( ${2:-64} * 1024 * 1024 ))
if git status --porcelain -- speechvq/pretrained | grep -qv '^ D '; then  # deleted: set aside before
  echo "speechvq/pretrained has uncommitted changes; commit them first" >&2
  exit 1
fi
grep -qx '/.kit/' .gitignore || { echo ".kit/ must be ignored (.gitignore)" >&2; exit 1; }
mkdir -p .kit
if [ ! -d .kit/whl ]; then  # for the GPU machine's Python 3.12 (docs/gpu.md)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .kit/whl.tmp \
    soundfile==0.14.0 cffi==2.1.1 pycparser==3.12
  mv .kit/whl.tmp .kit/whl
fi
rm -f "${aside[@]}"
bytes() { (xargs -0 -r stat -c %s 2>/dev/null || true) | awk '{s += $1} END {print s + 0}'; }
tree=$(( $( (git ls-files -z; git ls-files -z -o --exclude-standard) | bytes ) ))
wheels=$(( $(find .kit/whl -type f -print0 | bytes) ))
room=$(( cap - tree - wheels - 2 * 1024 * 1024 ))  # 2 MiB to spare
# About 1.1 MB of FLAC a minute of this speech; aim under it, then check.
minutes=$(python3 -c "print(round($room / 1.3e6, 1))")
while :; do
  speechvq pack "$prepared" .kit/data --minutes "$minutes" --max-seconds 3 --force
  size=$(( $(find .kit/data -type f -print0 | bytes) ))
  [ "$size" -le "$room" ] && break
  minutes=$(python3 -c "print(round($minutes * 0.9, 1))")
done
total=$(( tree + wheels + size ))
echo "travels: tree $((tree / 1048576)) MiB + wheels $((wheels / 1048576)) MiB + data $((size / 1048576)) MiB = $((total / 1048576)) MiB of $((cap / 1048576))"
echo "models set aside (recipes/gpu/kit.sh restore): ${aside[*]}"
