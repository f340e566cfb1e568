#!/bin/bash
# The ranking benchmark of docs/benchmarks.md ("Feed ranking by label probability") on one H200,
# after the vLLM 0.26.0 bundle of ../shared/gpu/README.md is unpacked into /root/site:
#   bash docs/bench/run-gpu-ranking.sh OUTDIR
# A Llama-shaped model with dummy weights and the default model's tokenizer (.gpu/tok).
# Knobs (environment): SHAPE 1b|8b, QUANT (empty = BF16, or fp8), EAGER true|false,
# BATCH_TOKENS, SIZES, CALLS, RANK_CONC (comma list: one point per load), PREFIX (on,off),
# REPLICAS (RankPosts again on that many server processes sharing the GPU), POOL (every
# call's candidates drawn from one pool of that many posts), NAME.
set -u
BACK=${1:-${OUT:-/tmp/bench-out}}; W=/tmp/bench-ranking; mkdir -p "$W" "$BACK"
SHAPE=${SHAPE:-1b}; QUANT=${QUANT:-}; EAGER=${EAGER:-true}
NAME=${NAME:-gpu-h200-ranking-$SHAPE}
trap 'cp "$W"/*.md "$W"/*.json "$BACK"/ 2>/dev/null; tar -czf "$BACK/ranking.tgz" -C "$W" .' EXIT
export PYTHONPATH=/root/site:$PWD/shared:$PWD/services PYTHONUNBUFFERED=1
python setup.py --version >/dev/null 2>&1 || true
[ -f /tmp/d-$SHAPE/config.json ] || python docs/bench/dummy_model.py /tmp/d-$SHAPE $SHAPE .gpu/tok
LABEL="random-weight Llama $SHAPE shape (dummy weights), ${QUANT:-BF16}, $([ "$EAGER" = true ] && echo eager || echo compiled)"
timeout "${LIMIT:-330}" python -m genai_bench --workload ranking --model /tmp/d-$SHAPE --model-label "$LABEL" \
  --engine load_format=dummy --engine dtype=bfloat16 --engine enforce_eager=$EAGER \
  ${QUANT:+--engine quantization=$QUANT} \
  --engine max_model_len=4096 --engine max_num_seqs=512 --engine max_num_batched_tokens=${BATCH_TOKENS:-16384} \
  --engine gpu_memory_utilization=0.85 --rank-sizes ${SIZES:-10,100,500} --rank-calls ${CALLS:-16} \
  --rank-concurrency ${RANK_CONC:-8} --rank-targets raw,rankposts --rank-prefix-caching ${PREFIX:-on,off} \
  --rank-replicas ${REPLICAS:-1} --rank-pool ${POOL:-0} \
  --out "$W" --name "$NAME" > "$W/$NAME.log" 2>&1
echo "bench $NAME exit $?"
grep -E "genai bench ranking|Error|error" "$W/$NAME.log" | cut -c1-400 | tail -40
