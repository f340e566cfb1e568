#!/bin/bash
# Multi-GPU runs of docs/benchmarks.md ("Quantized multi-GPU serving"), on the two-H200 machine,
# after the vLLM 0.26.0 bundle of ../shared/gpu/README.md is unpacked into /root/site.
# Random weights (engine.load_format: dummy) in Llama-3 8B / 70B shapes with the default model's
# tokenizer (carried in .gpu/tok), compiled (CUDA graphs). One step per call (each fits 10 minutes):
#   bash docs/bench/run-gpu-tp2.sh OUTDIR 70b-fp8    # 70B TP=2 FP8: our gRPC service, then raw AsyncLLM
#   bash docs/bench/run-gpu-tp2.sh OUTDIR 70b-bf16   # 70B TP=2 BF16: our gRPC service
#   bash docs/bench/run-gpu-tp2.sh OUTDIR 8b         # 8B: TP=2 (own server: GPU metrics, SIGTERM, orphans), then 2 x TP=1
#   bash docs/bench/run-gpu-tp2.sh OUTDIR knobs      # 70B FP8 TP=2, eager: max_num_batched_tokens 2048/8192/16384
set -u
BACK=${1:-${OUT:-/tmp/bench-out}}; STEP=${2:-70b-fp8}
# Results go to a work folder and come back as one archive (the device tool returns at most 8 files).
OUTDIR=/tmp/bench-$STEP; mkdir -p "$OUTDIR" "$BACK"
trap 'tar -czf "$BACK/$STEP.tgz" -C "$OUTDIR" . ; cp "$OUTDIR"/*.md "$BACK"/ 2>/dev/null' EXIT
export PYTHONPATH=/root/site:$PWD/shared:$PWD/services PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
python setup.py --version >/dev/null 2>&1 || true
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
[ -f /tmp/d70/config.json ] || python docs/bench/dummy_model.py /tmp/d70 70b .gpu/tok
[ -f /tmp/d8/config.json ] || python docs/bench/dummy_model.py /tmp/d8 8b .gpu/tok
COMMON="--engine load_format=dummy --engine dtype=bfloat16 --engine enforce_eager=${EAGER:-false} \
  --engine max_model_len=4096 --engine max_num_seqs=256 --engine gpu_memory_utilization=0.90 \
  --mix rewrite --requests 8 --per-slot 2 --warmup 4"
bench() { timeout ${LIMIT:-560} python -m genai_bench "$@" >> "$OUTDIR/$STEP.log" 2>&1; echo "bench exit $?";
  for f in /tmp/genai-bench-*/*/server.log; do [ -f "$f" ] && grep -v "^\s*$" "$f" | tail -25 > "$OUTDIR/server-$(basename $(dirname $f)).log"; done; }
orphans() { echo "processes left: $(pgrep -fc 'VllmWorker|EngineCore|genai_services.host.cli' || true)";
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader | sed 's/^/gpu app: /'; }
case "$STEP" in
70b-fp8)
  bench --model /tmp/d70 --model-label "random-weight Llama 70B shape, FP8, TP=2" $COMMON \
    --engine quantization=fp8 --engine tensor_parallel_size=2 --targets raw,grpc --order grpc,inproc \
    --concurrency 1,16,64,256 --deadline-s 470 --out "$OUTDIR" --name gpu-h200x2-70b-fp8-tp2 ;;
70b-bf16)
  bench --model /tmp/d70 --model-label "random-weight Llama 70B shape, BF16, TP=2" $COMMON \
    --engine tensor_parallel_size=2 --targets grpc --concurrency 1,16,64,256 --deadline-s 500 \
    --out "$OUTDIR" --name gpu-h200x2-70b-bf16-tp2 ;;
knobs)
  for t in ${TOKENS:-2048 8192 16384}; do
    bench --model /tmp/d70 --model-label "70B FP8 TP=2 eager, max_num_batched_tokens=$t" $COMMON \
      --engine quantization=fp8 --engine tensor_parallel_size=2 --engine max_num_batched_tokens=$t \
      --targets grpc --concurrency 1,64,256 --deadline-s 170 --out "$OUTDIR" --name gpu-h200x2-70b-knob-$t
  done ;;
8b)
  # TP=2 on our own server, so its GPU metrics can be read beside nvidia-smi and its shutdown watched.
  cat > /tmp/tp2.yaml <<YAML
engine: {model: /tmp/d8, load_format: dummy, dtype: bfloat16, tensor_parallel_size: 2, enforce_eager: ${EAGER:-false},
         max_model_len: 4096, max_num_seqs: 256, gpu_memory_utilization: 0.90}
server: {host: 127.0.0.1, port: 50061, shutdown_grace_s: 10}
metrics: {host: 127.0.0.1, port: 9161}
admission: {max_waiting_requests: 1024, max_waiting_prompt_tokens: 4000000}
YAML
  t0=$SECONDS; python -m genai_services.host.cli serve --config /tmp/tp2.yaml > "$OUTDIR/tp2-server.log" 2>&1 & SP=$!
  until python -c "import grpc,sys; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g
sys.exit(0 if g.HealthStub(grpc.insecure_channel('127.0.0.1:50061')).Check(h.HealthCheckRequest(), timeout=2).status==1 else 1)" 2>/dev/null; do
    sleep 2; kill -0 $SP 2>/dev/null || { echo "server died"; tail -30 "$OUTDIR/tp2-server.log"; break; }
    [ $((SECONDS - t0)) -gt 180 ] && { echo "not SERVING after 180 s"; grep -v '^\s*$' "$OUTDIR/tp2-server.log" | tail -15; break; }; done
  echo "8b tp2 SERVING after $((SECONDS - t0)) s"
  ( while kill -0 $SP 2>/dev/null; do
      echo "smi $(nvidia-smi --query-gpu=index,utilization.gpu --format=csv,noheader | tr '\n' ' ')"
      echo "ours $(curl -s 127.0.0.1:9161/metrics | grep '^genai_gpu_utilization_ratio' | tr '\n' ' ')"
      sleep 2; done > "$OUTDIR/gpu-util-samples.log" 2>&1 ) &
  timeout 110 python -m genai_bench --address 127.0.0.1:50061 --metrics-url http://127.0.0.1:9161/metrics \
    --model /tmp/d8 --model-label "random-weight Llama 8B shape, BF16, TP=2" $COMMON --targets grpc \
    --concurrency 1,16,64,256 --deadline-s 100 --out "$OUTDIR" --name gpu-h200x2-8b-tp2 >> "$OUTDIR/$STEP.log" 2>&1
  t1=$SECONDS; kill -TERM $SP; wait $SP; echo "8b tp2 SIGTERM -> exit $? in $((SECONDS - t1)) s"; sleep 2; orphans
  # One TP=1 replica per GPU at once: BF16 on GPU 0, FP8 on GPU 1 (two BF16 replicas = 2x GPU 0's).
  export BENCH_SERVER_LOG=info
  for g in 0 1; do q=""; [ $g = 1 ] && q="--engine quantization=fp8"
    CUDA_VISIBLE_DEVICES=$g timeout 240 python -m genai_bench --model /tmp/d8 \
      --model-label "random-weight Llama 8B shape, TP=1 on GPU $g ${q:+FP8}" $COMMON $q --targets grpc \
      --concurrency 1,16,64,256 --deadline-s 230 --out "$OUTDIR" --name gpu-h200x2-8b-tp1-gpu$g > "$OUTDIR/tp1-gpu$g.log" 2>&1 & done; wait
  grep -h "engine_ready" /tmp/genai-bench-*/*/server.log /tmp/genai-bench-*/server.log 2>/dev/null | cut -c1-300
  orphans ;;
esac
grep -hE "^genai bench|^  |startup|SERVING|exit" "$OUTDIR/$STEP.log" | tail -40
