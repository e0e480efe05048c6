#!/usr/bin/env bash
# Run on the GPU machine (docs/gpu.md), in a copy of the tree that
# recipes/gpu/kit.sh made ready, with .kit/whl and .kit/data beside it: installs
# the missing wheels, unpacks the corpus, trains CONFIG from `small-spk` for
# MINUTES of wall clock (`train --max-minutes`; checkpointed, exported) and
# leaves in OUT the model file in 15 MB parts (some transfer tools cap file
# sizes; `cat model.part-* > model.safetensors`), log.csv and the config.
#   [MINUTES=7] [OUT=runs/gpu-out] [CONFIG=...] [ALLOW_CPU=1] bash recipes/gpu/device.sh
# A rerun goes on from WORK's run (the machine's /tmp) where it is still there.
set -euo pipefail
minutes=${MINUTES:-7}
out=${OUT:-runs/gpu-out}
config=${CONFIG:-recipes/configs/small-sfwn-spk-gpu.yaml}
work=${WORK:-/tmp/speechvq-gpu}
mkdir -p "$out" "$work"
if ! python3 -c "import soundfile" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$work/site" .kit/whl/*.whl
  export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TQDM_MININTERVAL=30 PYTHONUNBUFFERED=1
svq() { python3 -m speechvq.cli "$@"; }
python3 -c "import torch, speechvq; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
  torch.cuda.get_device_name() if torch.cuda.is_available() else '', 'speechvq', speechvq.__version__)"
if [ "${ALLOW_CPU:-0}" != 1 ] && ! python3 -c "import torch; assert torch.cuda.is_available()"; then
  echo "no GPU visible to torch: not spending the minutes on a CPU run (ALLOW_CPU=1 to try)" >&2
  exit 1
fi
[ -f "$work/prepared/prepare.json" ] || svq unpack .kit/data "$work/prepared"

bring_back() {  # the latest model file and log into OUT
  local run=$work/run
  [ -f "$run/model.safetensors" ] || return 0
  cp -f "$run/log.csv" "$run/train_config.json" "$out/" 2>/dev/null || true
  rm -rf "$out/.parts" && mkdir -p "$out/.parts"
  split -b 15000000 -d "$run/model.safetensors" "$out/.parts/model.part-"
  rm -f "$out"/model.part-* && mv "$out"/.parts/model.part-* "$out/" && rmdir "$out/.parts"
}
(while sleep 120; do bring_back; done) &
keeper=$!
if [ -f "$work/run/checkpoint.pt" ]; then
  svq train "$work/prepared" --out "$work/run" --resume --max-minutes "$minutes"
else
  svq train "$work/prepared" --out "$work/run" --config "$config" --init-from small-spk \
    --max-minutes "$minutes"
fi
kill "$keeper" 2>/dev/null || true
bring_back
svq log "$work/run" || true  # the run's figures by range of steps, into the reply's tail
ls -l "$out"
