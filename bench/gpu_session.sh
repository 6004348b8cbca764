#!/usr/bin/env bash
# Every GPU benchmark in one call, inside a time budget (a lent GPU machine: bare, no network, minutes of lease).
#
#   bash bench/gpu_session.sh                 # OUT=runs/gpu_session, BUDGET_S=540
#   SMOKE=1 BUDGET_S=900 bash bench/gpu_session.sh   # the same pipeline on CPU with tiny models (a dry run)
#
# In priority order, each stage given what is left of BUDGET_S:
#   0. tests/test_gpu.py (the model on CUDA: equal to CPU, padding-exact, cached generation, bf16, Trainer);
#   1. WikiText-2 causal LM (training/configs/wikitext2_lm_transfer_gpu.json), while the four from-scratch BiLSTM
#      benchmarks share the GPU;
#   2. the LM-based rows: scratch-lm, pretrained and ulmfit for the four benchmarks, 12 runs sharing the GPU;
#   3. bench/speed.py --sizes full --bf16 with whatever time is left.
# A bare machine gets the data and the missing wheels from .gpu/ (see docs/gpu.md); results land in $OUT.
set -u
OUT=${OUT:-runs/gpu_session}
BUDGET_S=${BUDGET_S:-540}
SMOKE=${SMOKE:-0}
PY=${PYTHON:-python3}
START=$(date +%s)
LOGS=runs/gpu_logs  # everything but the result files travels back as one archive: at most 8 files come back
left() { echo $((BUDGET_S - ($(date +%s) - START))); }
minutes_left_but() { awk -v s="$(($(left) - $1))" 'BEGIN { printf "%.2f", (s > 30 ? s : 30) / 60 }'; }
seconds_left_but() { local s=$(($(left) - $1)); echo $((s > 30 ? s : 30)); }
log() { echo "[$(date -u +%H:%M:%S) +$(($(date +%s) - START))s] $*" | tee -a "$OUT/session.log"; }
LM=runs/lm_wikitext2_gpu
rm -rf $LOGS runs/gpu_downstream $LM  # this script's own outputs: a rerun starts afresh
mkdir -p "$OUT" $LOGS
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [ ! -d ../shared/data ] && [ -f .gpu/data.tar.xz ]; then
  mkdir -p ../shared && tar -xJf .gpu/data.tar.xz -C ../shared || exit 1
fi
if ! $PY -c "import datasets, evaluate, seqeval, rnn_lm_hf" 2>/dev/null && [ -d .gpu/whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
$PY - <<'PY' 2>&1 | tee -a "$OUT/session.log"
import datasets, evaluate, torch, transformers
print("torch", torch.__version__, "transformers", transformers.__version__, "datasets", datasets.__version__,
      "device", torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
PY
nvidia-smi > $LOGS/nvidia-smi.txt 2>&1

if [ "$SMOKE" = 1 ]; then
  DEVICE=cpu
  LM_FLAGS=(--use_cpu true --tf32 false --max_steps 4 --tokenizer_vocab_size 300 --num_samples 1
            --config_overrides "cell_type=lstm,embedding_size=16,hidden_size=24,num_hidden_layers=2,dropout=0.3")
  RUN_FLAGS=(-- --max_steps 2)
  SPEED_FLAGS=(--device cpu --sizes tiny)
else
  DEVICE=cuda
  LM_FLAGS=()
  RUN_FLAGS=()
  SPEED_FLAGS=(--device cuda --sizes full --bf16 --repeats 3)
fi

log "stage 0: CUDA tests"
timeout 120 $PY -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider > $LOGS/test_gpu.log 2>&1
log "CUDA tests exit $? ($(tail -n 1 $LOGS/test_gpu.log))"

log "stage 1: LM and from-scratch rows ($(left) s left)"
$PY bench/downstream.py --device $DEVICE --jobs 4 --init scratch --deadline_minutes "$(minutes_left_but 60)" \
  --results "$OUT/downstream_scratch.json" --runs_dir runs/gpu_downstream "${RUN_FLAGS[@]}" \
  > $LOGS/downstream_scratch.log 2>&1 &
SCRATCH=$!
timeout "$(seconds_left_but 200)" $PY training/train_clm.py training/configs/wikitext2_lm_transfer_gpu.json \
  --output_dir $LM "${LM_FLAGS[@]}" > $LOGS/lm.log 2>&1
log "LM exit $? ($(grep -h '\[result\]' $LOGS/lm.log | tr '\n' ' '))"

if [ -f $LM/model.safetensors ]; then
  log "stage 2: LM-based rows ($(left) s left)"
  $PY bench/downstream.py --device $DEVICE --jobs 12 --pretrained_lm $LM --init scratch-lm pretrained ulmfit \
    --deadline_minutes "$(minutes_left_but 45)" --results "$OUT/downstream_lm.json" --runs_dir runs/gpu_downstream \
    "${RUN_FLAGS[@]}" > $LOGS/downstream_lm.log 2>&1
  log "LM-based rows exit $?"
fi
wait $SCRATCH
log "from-scratch rows exit $?"

log "stage 3: speed ($(left) s left)"
timeout "$(seconds_left_but 10)" $PY bench/speed.py "${SPEED_FLAGS[@]}" --out "$OUT/speed.json" > $LOGS/speed.log 2>&1
log "speed exit $?"

tar -czf "$OUT/runs.tar.gz" --exclude='*.safetensors' --exclude='*.bin' --exclude='*.pt' --exclude='checkpoint-*' \
  --exclude='*.pth' --exclude='tokenizer.json' --exclude='*_rnn_lm.py' runs/gpu_downstream $LM $LOGS 2>/dev/null
log "done"
