#!/usr/bin/env bash
# The validation matrix on CUDA, fp32 and bf16, in well under 8 minutes on one H100; its
# autocast cases (torch.autocast bf16 / fp16 on fp32 weights, issue 10) once each, as defined.
# Only the autocast cases: bash scripts/gpu_validate.sh --autocast-only
# Writes docs/validation/<gpu-name>.{jsonl,json,md}. Run from anywhere:
#   bash scripts/gpu_validate.sh
# A machine without pydantic (the lent GPU machines) takes it from wheels in .whl/, made here
# with `make gpu-wheels` (pydantic and its needs, for CPython 3.12 on x86-64).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import pydantic" 2>/dev/null; then
  [ -d .whl ] || { echo "error: pydantic missing and no .whl/ folder (make gpu-wheels)" >&2; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/tgauge-site .whl/*.whl
  export PYTHONPATH=/tmp/tgauge-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" scripts/gpu_validate.py --device "${DEVICE:-cuda}" --dtypes fp32,bf16 --out docs/validation "$@"
for f in docs/validation/*.jsonl; do
  [ "$f" -nt "${f%.jsonl}.md" ] 2>/dev/null || [ ! -e "${f%.jsonl}.md" ] || continue
  "$PY" scripts/validation_table.py "$f" > "${f%.jsonl}.md"
done
