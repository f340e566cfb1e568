#!/bin/bash
# The GPU benchmark run of docs/benchmarks.md: one command on the H100 machine, after the
# vLLM 0.26.0 bundle of ../shared/gpu/README.md is unpacked into /root/site (setup.sh).
# Everything that starts an engine is in this one command (each start costs tens of seconds).
# Usage, at the repository root there: bash docs/bench/run-gpu.sh OUTDIR
# Environment overrides (defaults in the command below): TARGETS, VARIANTS, ORDER, NAME,
# DEADLINE, EAGER (false: torch.compile + CUDA graphs, ~3 min more for the first start),
# CONC, PER_SLOT (closed-loop requests per concurrency slot), HF_CONC, HF_BATCH, HF_REQUESTS ('' for all of each load's requests).
set -u
OUTDIR=${1:-${OUT:-/tmp/bench-out}}
mkdir -p "$OUTDIR"
: > "$OUTDIR/model.txt"
# The GPU image has grpcio 1.84.0 and the bundle none, while the generated code (ours and
# grpcio-health-checking's) needs 1.85.0: its wheel travels in .gpu/p03/whl (a zip).
# xds-protos (our ORCA load reports) is missing too. Only its xds, validate and udpa packages
# are taken: the wheel also has `google/__init__.py` and `opentelemetry/__init__.py`, regular
# packages that would hide the bundle's namespace packages (google.protobuf, the OTel SDK)
# wherever they sat on the path.
rm -rf /tmp/grpc185 /tmp/xds /tmp/xds-wheel && python -m zipfile -e .gpu/p03/whl/grpcio-1.85.0-*.whl /tmp/grpc185 \
  && python -m zipfile -e .gpu/p03/whl/xds_protos-1.85.0-*.whl /tmp/xds-wheel \
  && mkdir -p /tmp/xds && mv /tmp/xds-wheel/xds /tmp/xds-wheel/validate /tmp/xds-wheel/udpa /tmp/xds/
export PYTHONPATH=/tmp/grpc185:/root/site:/tmp/xds:$PWD/shared:$PWD/services PYTHONUNBUFFERED=1
python -c "import grpc; print('grpcio', grpc.__version__)" >> "$OUTDIR/model.txt" 2>&1
# Generated gRPC code is git-ignored, so it is regenerated here (or taken from the bundle).
python setup.py --version >/dev/null 2>&1 || true
[ -f shared/genai/feed/v1/feed_service_pb2.py ] || { mkdir -p shared/genai && cp -r .gpu/p03/genai_gen/. shared/genai/; }
# Our server's imports, checked before any engine starts, so a missing package shows at once.
python -c "import google.protobuf as p, genai_services.host.server; print('server imports ok; protobuf', p.__version__)" \
  >> "$OUTDIR/model.txt" 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$OUTDIR/model.txt" 2>&1
# A random-weight 1.2B Llama with SmolLM2's tokenizer and chat template (written on the GPU).
[ -f /tmp/m1b/config.json ] || python .gpu/p03/make_bench_model.py /tmp/m1b 1b .gpu/p03/tok >> "$OUTDIR/model.txt" 2>&1 \
  || { cat "$OUTDIR/model.txt"; exit 1; }
python -m genai_bench \
  --model /tmp/m1b --model-label "random-weight Llama 1.2B (bf16), SmolLM2 tokenizer" \
  --engine dtype=bfloat16 --engine enforce_eager=${EAGER:-true} --engine max_model_len=4096 \
  --engine max_num_seqs=256 --engine gpu_memory_utilization=0.85 \
  --targets ${TARGETS:-raw,grpc,openai,hf_batch} ${VARIANTS---variant fp8 --variant prefix_off --variant ngram} \
  --order ${ORDER:-grpc,inproc,fp8,prefix_off,hf_batch,openai,ngram} \
  --concurrency ${CONC:-1,16,64} --requests 6 --per-slot ${PER_SLOT:-2} --mix rewrite=2,search,feed,suggest \
  --hf-concurrency ${HF_CONC:-1,16} --hf-batch-size ${HF_BATCH:-16} ${HF_REQUESTS---hf-requests 3} --warmup 4 --deadline-s "${DEADLINE:-450}" \
  --out "$OUTDIR" --name "${NAME:-gpu-h100}" > "$OUTDIR/bench.log" 2>&1
echo "exit $?"
head -4 "$OUTDIR/model.txt"
grep -E "^\[bench|^genai|^  " "$OUTDIR/bench.log" | tail -80
