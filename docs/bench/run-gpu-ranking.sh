#!/bin/bash
# The ranking benchmark of docs/benchmarks.md ("Feed ranking by label probability") on one H200,
# after the vLLM 0.26.0 bundle of ../shared/gpu/README.md is unpacked into /root/site:
#   bash docs/bench/run-gpu-ranking.sh OUTDIR
# A Llama-3.2-1B-shaped model with dummy weights and the default model's tokenizer (.gpu/tok).
# Eager: scoring is prefill-only, and batches of thousands of prompt tokens run outside
# CUDA graphs anyway; eager saves the compile at each of the two engine starts.
set -u
BACK=${1:-${OUT:-/tmp/bench-out}}; W=/tmp/bench-ranking; mkdir -p "$W" "$BACK"
trap 'cp "$W"/*.md "$BACK"/ 2>/dev/null; tar -czf "$BACK/ranking.tgz" -C "$W" .' EXIT
export PYTHONPATH=/root/site:$PWD/shared:$PWD/services PYTHONUNBUFFERED=1
python setup.py --version >/dev/null 2>&1 || true
[ -f /tmp/d1/config.json ] || python docs/bench/dummy_model.py /tmp/d1 1b .gpu/tok
timeout "${LIMIT:-330}" python -m genai_bench --workload ranking --model /tmp/d1 \
  --model-label "random-weight Llama 1.2B shape (dummy weights), BF16, eager" \
  --engine load_format=dummy --engine dtype=bfloat16 --engine enforce_eager=${EAGER:-true} \
  --engine max_model_len=4096 --engine max_num_seqs=512 --engine max_num_batched_tokens=16384 \
  --engine gpu_memory_utilization=0.85 --rank-sizes ${SIZES:-10,100,500} --rank-calls ${CALLS:-16} \
  --rank-concurrency ${RANK_CONC:-8} --rank-targets raw,rankposts --rank-prefix-caching on,off \
  --out "$W" --name gpu-h200-ranking-1b > "$W/log" 2>&1
echo "bench exit $?"
grep -E "genai bench ranking|Error|error" "$W/log" | cut -c1-400 | tail -30
