#!/bin/bash
# A/B of the front end's CPU time per output token against a running server started by
# docs/bench/frontend_serve.py DIR (which writes DIR/ready.json; touch DIR/stop to end it).
# Runs genai bench --address at concurrency CONC and reads /proc/PID/stat before and after.
# usage: ab.sh NAME DIR(with ready.json) CONC REQUESTS
name=$1; dir=$2; conc=$3; n=$4
addr=$(python3 -c "import json;print(json.load(open('$dir/ready.json'))['address'])")
mport=$(python3 -c "import json;print(json.load(open('$dir/ready.json'))['metrics_port'])")
pid=$(python3 -c "import json;print(json.load(open('$dir/ready.json'))['pid'])")
cpu() { python3 -c "import os;f=open('/proc/$pid/stat').read();x=f[f.rindex(')')+2:].split();print((int(x[11])+int(x[12]))/os.sysconf('SC_CLK_TCK'))"; }
cd "$(dirname "$0")/../.."
mkdir -p "${AB_OUT:-/tmp/frontend-ab}"
export PYTHONPATH=$PWD/shared:$PWD/services
# warm-up (grammars) unmeasured
.venv/bin/python -m genai_bench --targets grpc --address $addr --concurrency 8 --requests 16 --warmup 4 --out ${AB_OUT:-/tmp/frontend-ab} --name warm-$name > /dev/null 2>&1
c0=$(cpu)
.venv/bin/python -m genai_bench --targets grpc --address $addr --metrics-url http://127.0.0.1:$mport/metrics --concurrency $conc --requests $n --warmup 0 --out ${AB_OUT:-/tmp/frontend-ab} --name $name > ${AB_OUT:-/tmp/frontend-ab}/$name.log 2>&1
c1=$(cpu)
python3 - <<PY
import json
r=json.load(open('${AB_OUT:-/tmp/frontend-ab}/$name.json'))['runs'][0]
cpu=$c1-$c0
print("$name", "c=$conc", "tok", r['output_tokens'], "tok/s", round(r['output_tok_per_s']), "cpu_s", round(cpu,2), "us/tok", round(cpu/r['output_tokens']*1e6,1), "ttft_p99_ms", round((r['ttft_s']['p99'] or 0)*1000), "load", r.get('loadavg_1m_before_after'))
PY
