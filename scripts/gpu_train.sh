#!/usr/bin/env bash
# The CNN recipe on a lent GPU, in one call of at most 9 minutes: two seeds at full size (longer than the CPU
# can afford), their ensemble's card, and everything back under OUT (weights, cards, logs).
#
#   python -m fer_helpers.data pack --fer2013 $FER2013_DIR --out fer2013_train_val.npz   # here: one file (71 MB)
#   scripts/gpu_train.sh fer2013_train_val.npz "$OUT"                                    # there (H100/H200)
#   scripts/gpu_train.sh fer2013_train_val.npz /tmp/dry --device cpu --width 8 --epochs 1  # a dry run on a CPU
#
# Options after OUT go to every `python -m fer_helpers.cnn` call and override the defaults below. Each seed is
# time-boxed (SEED_SECONDS, default 200 s): a seed cut short is reported with its log and left out of the
# ensemble (size the epochs to the card from the first call). Selection uses PublicTest only; PrivateTest is
# never in the file. The packed file does not fit the lent device machines' 64 MiB transfer beside this
# repository (43 MB of it model weights); on Colab or your own GPU machine it runs as is.
set -euo pipefail
DATA=${1:?usage: scripts/gpu_train.sh DATA.npz OUT [cnn options]}
OUT=${2:?usage: scripts/gpu_train.sh DATA.npz OUT [cnn options]}
shift 2
SEED_SECONDS=${SEED_SECONDS:-200}
PY=${PYTHON:-python3}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{ nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } > "$OUT/device.txt"
members=()
for seed in 0 1; do
  name="cnn_gpu_s$seed"
  if timeout "$SEED_SECONDS" "$PY" -m fer_helpers.cnn --fer2013 "$DATA" --out "$OUT/$name.safetensors" \
      --checkpoint "$OUT/$name.pt" --seed "$seed" --epochs 100 --device cuda --mixup 0.2 "$@" > "$OUT/$name.log" 2>&1; then
    members+=("$OUT/$name.safetensors")
  else
    echo "seed $seed stopped (time box or error): $OUT/$name.log" | tee -a "$OUT/device.txt"
  fi
  rm -f "$OUT/$name.pt"  # the optimizer checkpoint stays off the returned files (75 MB)
done
if [ "${#members[@]}" -ge 2 ]; then
  "$PY" -m fer_helpers.ensemble --fer2013 "$DATA" --members "${members[@]}" > "$OUT/ensemble.log" 2>&1
fi
tail -n 2 "$OUT"/*.log
