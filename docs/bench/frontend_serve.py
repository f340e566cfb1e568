"""Start genai serve on the tiny model (EXTRA_ENGINE: JSON engine overrides); write DIR/ready.json
with its address, metrics port, pid and idle CPU rate; stop when DIR/stop appears.

Usage: PYTHONPATH=shared:services python docs/bench/frontend_serve.py DIR
"""
import sys, time, json
from pathlib import Path
from genai_testing.procs import start_server, server_env, process_cpu_seconds
from genai_testing.tiny_model import write_tiny_model

tmp = Path(sys.argv[1]); tmp.mkdir(parents=True, exist_ok=True)
model = write_tiny_model(tmp / "model")
proc = start_server(tmp, {"model": str(model), "dtype": "float32", "max_num_seqs": 64, "cpu_kv_cache_space_gib": 1, "max_model_len": 4096, **json.loads(__import__("os").environ.get("EXTRA_ENGINE", "{}"))},
    sections={"admission": {"max_waiting_requests": 100000, "max_waiting_prompt_tokens": 10**9}, "logging": {"level": "warning"}},
    shutdown_grace_s=5, env=server_env(tmp, OMP_NUM_THREADS="2"))
proc.wait_serving(600)
time.sleep(3)
c0 = process_cpu_seconds(proc.process.pid); t0 = time.monotonic()
time.sleep(10)
idle = (process_cpu_seconds(proc.process.pid) - c0) / (time.monotonic() - t0)
print(json.dumps({"address": proc.address, "metrics_port": proc.metrics_port, "pid": proc.process.pid, "idle_cpu_per_s": idle}), flush=True)
Path(tmp / "ready.json").write_text(json.dumps({"address": proc.address, "metrics_port": proc.metrics_port, "pid": proc.process.pid, "idle_cpu_per_s": idle}))
# stay alive until told to stop
while not (tmp / "stop").exists():
    time.sleep(1)
print("exit", proc.stop(), flush=True)
