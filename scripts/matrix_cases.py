"""Measure the validation matrix's cases whose name starts with PREFIX (tgauge/matrix.py) on
the CPU and append each point to OUT (JSON lines, the records of `tgauge validate --out`, the
case name as the model), then print their table (scripts/validation_table.py).

Usage: PYTHONPATH=. .venv/bin/python scripts/matrix_cases.py PREFIX OUT
  e.g. mla docs/validation/cpu-mla/validation.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from validation_table import table  # noqa: E402

from tgauge.matrix import cases  # noqa: E402
from tgauge.validate import validate_point  # noqa: E402


def main(prefix: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for case in cases():
            if case.name.startswith(prefix):
                point = json.loads(validate_point(case.spec, case.workload).model_dump_json())
                f.write(json.dumps({**point, "model": case.name}) + "\n")
                f.flush()
    print(table(out))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
