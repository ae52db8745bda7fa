#!/usr/bin/env bash
# GPU checks for tunevl in one call (sized for a ~10-minute device run). Not part of CI: CI has no GPU.
#
# Prepare once on the development machine (the device has torch/transformers/peft but not ruamel.yaml):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl ruamel.yaml ruamel.yaml.clib
# Then run on the device with `.whl` carried:  bash scripts/gpu_check.sh
# Every figure it prints belongs in scripts/benchmarks/README.md and the session note.
set -uo pipefail
out=${OUT:-gpu_out}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
python3 - <<'EOF' || exit 1
import torch
assert torch.cuda.is_available(), "no CUDA device: this script is for the GPU machine"
print("device:", torch.cuda.get_device_name(), "| torch", torch.__version__)
EOF
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

echo "== 1. quickstart in bf16 on the GPU (untrained vs trained table)"
timeout 240 python3 -m tunevl train recipes/quickstart.yaml "train.output_dir=$out/quickstart" train.progress_bar=false \
  2>&1 | tail -14 | tee "$out/quickstart.log"

echo "== 2. tunevl loop vs plain transformers+peft, CLIP ViT-B/16-sized random model"
timeout 240 python3 scripts/benchmarks/train_loop_overhead.py --device cuda --steps 60 --batch 128 \
  --hidden 768 --layers 12 --image-size 224 2>&1 | tail -5 | tee "$out/loop_overhead.log"

echo "== 3. LVLM: tiny LLaVA recipe end to end on the GPU, then load + generate"
timeout 120 python3 -m tunevl train lvlm/llava_sft_lora model.name_or_path=tiny-llava train.max_steps=20 \
  "train.output_dir=$out/llava" train.progress_bar=false \
  "data.train={_component_: synthetic_vqa, split: train}" "data.eval={_component_: synthetic_vqa, split: eval, num_samples: 20}" \
  2>&1 | tail -6 | tee "$out/llava.log"
python3 - "$out/llava" <<'EOF' 2>&1 | tail -3 | tee -a "$out/llava.log"
import sys, tunevl
from tunevl.data.synthetic import render_shapes
m = tunevl.load(sys.argv[1], device="cuda")
print("generate:", repr(m.generate([render_shapes(3, "red", "circle", image_size=32, seed=0)], "How many circles?", max_new_tokens=4)))
EOF
echo "done; logs in $out"
