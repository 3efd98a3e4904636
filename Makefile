# Quick start: `make demo` then `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

.PHONY: demo test test-all lint format bench clean gpu-wheels

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tgauge estimate gpt2-small --mode train --batch-size 8 --seq-len 1024
	$(VENV)/bin/tgauge estimate llama-2-7b --mode decode --dtype fp16 --prompt-len 2048 --new-tokens 256
	$(VENV)/bin/tgauge fit llama-3-8b --gpu h100-sxm --mode train --dtype bf16 --master-weights --seq-len 4096
	rm -rf reports/demo
	$(VENV)/bin/tgauge validate gpt2-small --mode train --batch-size 1 --sweep seq_len=32,64,128 --out reports/demo
	$(VENV)/bin/tgauge report --model gpt2-small --mode train --validation reports/demo/validation.jsonl --compare default --out reports/demo
	@echo "report written to reports/demo/report.html (and report.md)"

test: $(STAMP)
	$(PY) -m pytest

test-all: $(STAMP)
	$(PY) -m pytest -m ''

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) benchmarks/bench_estimator.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# Wheels for a GPU machine whose Python 3.12 lacks pydantic (scripts/gpu_validate.sh uses them).
gpu-wheels:
	mkdir -p .whl
	grep -qxF '/.whl/' .git/info/exclude || echo '/.whl/' >> .git/info/exclude
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d .whl pydantic pydantic-core annotated-types typing-inspection typing-extensions pyyaml
