#!/usr/bin/env bash
# Trains EmojiWorld on a CUDA machine within the device tool's 15 minutes (about 10 of them training),
# continuing from the committed weights when they exist. Prepare here first (PyPI reachable):
#   make emoji-data && scripts/gpu-prepare.sh
# then with the device tool:
#   run(command="bash scripts/emoji-gpu-train.sh", carry=[".gpu"], timeout_s=600)
# The EMA weights come back in $OUT/emojiworld.safetensors (copy to toyworld/weights/ once checked);
# the log beside them. MINUTES, BATCH, LR and CONCEPTS (0: all 1,623) override the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-env.sh
mkdir -p .cache/emojiworld "${OUT:=out/gpu}"
cp .gpu/renders.safetensors .cache/emojiworld/renders.safetensors
resume=()
if [ -f toyworld/weights/emojiworld.safetensors ]; then
    cp toyworld/weights/emojiworld.safetensors /tmp/emoji_state.safetensors
    resume=(--resume)
fi
python3 -m toyworld.emoji.train --device cuda --threads 8 --batch "${BATCH:-256}" --lr "${LR:-1e-3}" \
    --warmup 200 --concepts "${CONCEPTS:-0}" --seed 5 --minutes "${MINUTES:-10}" --save-every 2 \
    --out "$OUT/emojiworld.safetensors" --state /tmp/emoji_state.safetensors "${resume[@]}" \
    2>&1 | tee "$OUT/emojiworld_train.log"
