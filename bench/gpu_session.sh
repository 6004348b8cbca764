#!/usr/bin/env bash
# Every GPU benchmark in one call, inside a time budget (a lent GPU machine: bare, no network, minutes of lease).
#
#   bash bench/gpu_session.sh                        # OUT=runs/gpu_session, BUDGET_S=540
#   SMOKE=1 BUDGET_S=900 bash bench/gpu_session.sh   # the same pipeline on CPU with tiny models (a dry run)
#
# In priority order, each stage given what is left of BUDGET_S (docs/gpu.md says why this order):
#   0. tests/test_gpu.py (the model on CUDA: equal to CPU, padding-exact, cached generation, bf16, Trainer);
#   A. PTB in 200 s of training with the AWD-style recipe (training/configs/ptb_awd_budget_gpu.json), then its test
#      perplexity static, with the neural cache and with dynamic evaluation (tuned on validation);
#   1. bench/speed.py --sizes full --bf16 on the otherwise idle GPU (ratios to bare PyTorch, interleaved repeats);
#  1b. issue 14 (bench/speed.py --only generate gpt2 memory train_large, at most 240 s): generate vs the bare step
#      loop at batch 1/64, greedy/sampling, eager and compiled (static cache, CUDA graphs); tokens/s vs GPT-2 124M;
#      peak memory of training and of decoding after 64/1k/8k-token prompts; training at 2x1500 and 3x1024/50k;
#   2. the WikiText-2 transfer LM ($LM_CONFIG), packed into $OUT/lm.tar so the fine-tuning can go on elsewhere;
#   3. the LM-based downstream rows (bench/downstream.py --init $INITS, default scratch-lm pretrained), $JOBS runs
#      sharing the GPU, rt-polarity's folds spread over $CV_SHARDS of them; runs still going at the deadline are
#      stopped and reported as unfinished, never as results.
# Issue 13's bidirectional LM: LM_CONFIG=training/configs/wikitext2_bilm_gpu.json VARIANT=bilm, OVERRIDES (e.g.
# layer_mix=true) for every downstream run and TAGGER_OVERRIDES (use_crf=true) for the taggers'; SMOKE_LM_OVERRIDES
# replaces the dry run's tiny LM architecture. A word-level biLM (LM_CONFIG=training/configs/wikitext2_word_bilm_gpu.json
# VARIANT=word-bilm) is meant for the classifiers: TASK_VOCABULARY=1 maps it onto each task's own word vocabulary
# (bench/downstream.py --task_vocabulary), BENCHMARKS="sst2 rt_polarity" leaves out the taggers.
# A bare machine gets the data and the missing wheels from .gpu/ (bench/gpu_bundle.sh); results land in $OUT.
set -u
OUT=${OUT:-runs/gpu_session}
BUDGET_S=${BUDGET_S:-540}
SMOKE=${SMOKE:-0}
JOBS=${JOBS:-4}
LM_CONFIG=${LM_CONFIG:-training/configs/wikitext2_lm_transfer.json}
VARIANT=${VARIANT:-}
OVERRIDES=${OVERRIDES:-}
TAGGER_OVERRIDES=${TAGGER_OVERRIDES:-}
INITS=${INITS:-scratch-lm pretrained}
CV_SHARDS=${CV_SHARDS:-1}
BENCHMARKS=${BENCHMARKS:-ud_ewt_upos wnut17 sst2 rt_polarity}
TASK_VOCABULARY=${TASK_VOCABULARY:-0}
SMOKE_LM_OVERRIDES=${SMOKE_LM_OVERRIDES:-cell_type=lstm,embedding_size=16,hidden_size=24,num_hidden_layers=2,dropout=0.3}
PY=${PYTHON:-python3}
START=$(date +%s)
LOGS=runs/gpu_logs  # everything but the result files travels back as one archive: at most 8 files come back
LM=runs/gpu_lm
left() { echo $((BUDGET_S - ($(date +%s) - START))); }
minutes_left_but() { awk -v s="$(($(left) - $1))" 'BEGIN { printf "%.2f", (s > 30 ? s : 30) / 60 }'; }
seconds_left_but() { local s=$(($(left) - $1)); echo $((s > 30 ? s : 30)); }
log() { echo "[$(date -u +%H:%M:%S) +$(($(date +%s) - START))s] $*" | tee -a "$OUT/session.log"; }
rm -rf $LOGS runs/gpu_downstream $LM runs/gpu_ptb_awd  # this script's own outputs: a rerun starts afresh
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
            --config_overrides "$SMOKE_LM_OVERRIDES")
  RUN_FLAGS=(-- --max_steps 2)
  DOWNSTREAM_FLAGS=(--adaptation_epochs 0.01)  # --init adapted: a step of LM fine-tuning, not epochs
  SPEED_FLAGS=(--device cpu --sizes tiny)
  ISSUE14_FLAGS=(--device cpu --sizes tiny --new-tokens 4)
else
  DEVICE=cuda
  LM_FLAGS=(--use_cpu false --tf32 true --max_train_minutes 2.5)
  RUN_FLAGS=()
  DOWNSTREAM_FLAGS=()
  SPEED_FLAGS=(--device cuda --sizes full --bf16 --repeats 5)
  ISSUE14_FLAGS=(--device cuda --sizes full --repeats 3 --new-tokens 64)
fi
[ "$TASK_VOCABULARY" = 1 ] && DOWNSTREAM_FLAGS+=(--task_vocabulary)

log "stage 0: CUDA tests"
timeout 120 $PY -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider > $LOGS/test_gpu.log 2>&1
log "CUDA tests exit $? ($(tail -n 1 $LOGS/test_gpu.log))"

log "stage A: PTB AWD-style recipe, 200 s of training ($(left) s left)"
PTB=../shared/data/ptb
if [ "$SMOKE" = 1 ]; then  # a few hundred lines and a tiny 3-layer model with every AWD option
  mkdir -p runs/gpu_ptb_data
  for split in train valid test; do head -n 300 $PTB/ptb.$split.txt > runs/gpu_ptb_data/ptb.$split.txt; done
  PTB=runs/gpu_ptb_data
  PTB_FLAGS=(--use_cpu true --tf32 false --max_train_minutes 0.1 --eval_steps 5 --save_steps 5
             --config_overrides "cell_type=lstm,num_hidden_layers=3,hidden_size=32,hidden_sizes=32/32/16,embedding_size=16,weight_drop=0.3,dropout_input=0.2,dropout_output=0.2")
else
  PTB_FLAGS=(--use_cpu false)
fi
timeout 330 $PY training/train_clm.py training/configs/ptb_awd_budget_gpu.json --output_dir runs/gpu_ptb_awd \
  --train_file $PTB/ptb.train.txt --validation_file $PTB/ptb.valid.txt --test_file $PTB/ptb.test.txt \
  "${PTB_FLAGS[@]}" > $LOGS/ptb_awd.log 2>&1
log "PTB AWD exit $? ($(grep -h '\[result\]' $LOGS/ptb_awd.log | tr '\n' ' '))"
cp runs/gpu_ptb_awd/training_log.csv "$OUT/ptb_awd_training_log.csv" 2>/dev/null
timeout 240 $PY -m rnn_lm_hf.cli evaluate runs/gpu_ptb_awd --file $PTB/ptb.test.txt --neural_cache --dynamic_eval \
  --tune_file $PTB/ptb.valid.txt --stats_file $PTB/ptb.train.txt > "$OUT/ptb_awd_eval.json" 2> $LOGS/ptb_awd_eval.log
log "PTB AWD evaluation exit $?"

log "stage 1: speed ($(left) s left)"
timeout 90 $PY bench/speed.py "${SPEED_FLAGS[@]}" --out "$OUT/speed.json" > $LOGS/speed.log 2>&1
log "speed exit $?"

log "stage 1b: issue 14, compiled decoding / GPT-2 / memory / larger training ($(left) s left)"
timeout 240 $PY bench/speed.py "${ISSUE14_FLAGS[@]}" --only generate gpt2 memory train_large \
  --out "$OUT/speed_issue14.json" > $LOGS/speed_issue14.log 2>&1
log "issue-14 speed exit $? ($(grep -c PASS $LOGS/speed_issue14.log) pass, $(grep -c FAIL $LOGS/speed_issue14.log) fail)"

log "stage 2: LM $LM_CONFIG ($(left) s left)"
timeout "$(seconds_left_but 60)" $PY training/train_clm.py $LM_CONFIG --output_dir $LM "${LM_FLAGS[@]}" \
  > $LOGS/lm.log 2>&1
log "LM exit $? ($(grep -h '\[result\]' $LOGS/lm.log | tr '\n' ' '))"
tar -cf "$OUT/lm.tar" --exclude='checkpoint-*' runs/gpu_lm  # ~13 MB for the 2x256 LM: under one file's limit

if [ -f $LM/model.safetensors ]; then
  log "stage 3: downstream rows ($(left) s left)"
  # shellcheck disable=SC2086  # INITS and BENCHMARKS are lists of words
  $PY bench/downstream.py --device $DEVICE --jobs "$JOBS" --pretrained_lm $LM --init $INITS --cv_shards "$CV_SHARDS" \
    --only $BENCHMARKS --deadline_minutes "$(minutes_left_but 20)" \
    --variant "$VARIANT" --overrides "$OVERRIDES" --tagger_overrides "$TAGGER_OVERRIDES" \
    --results "$OUT/downstream.json" --runs_dir runs/gpu_downstream "${DOWNSTREAM_FLAGS[@]}" "${RUN_FLAGS[@]}" \
    > $LOGS/downstream.log 2>&1
  log "downstream exit $?"
fi

tar -czf "$OUT/runs.tar.gz" --exclude='*.safetensors' --exclude='*.bin' --exclude='*.pt' --exclude='checkpoint-*' \
  --exclude='*.pth' --exclude='tokenizer.json' --exclude='*_rnn_lm.py' runs/gpu_downstream runs/gpu_ptb_awd $LOGS 2>/dev/null
log "done"
