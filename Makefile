# Quick start: `make demo` then `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

.PHONY: demo test test-all lint format bench clean

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
	$(VENV)/bin/tgauge report --model gpt2-small --mode train --validation reports/demo/validation.jsonl --out reports/demo
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
