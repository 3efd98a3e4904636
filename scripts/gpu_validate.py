"""Run the validation matrix (tgauge/matrix.py) on one device in several dtypes and write
<out>/<device-name>.jsonl (one validated point per line, the `tgauge validate --out` format)
and <out>/<device-name>.json (the same points as one list, with the device facts).

    python3 scripts/gpu_validate.py --device cuda --dtypes fp32,bf16 --out docs/validation

Each point is written as soon as it finishes, so a run cut short keeps what it measured.
`--device cpu --limit 2` checks the script itself on a machine without a GPU. The matrix's
autocast cases (torch.autocast on fp32 weights, issue 10) run once each, in their own
precision, whatever --dtypes says; ``--autocast-only`` runs just them.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def device_name(device: str) -> str:
    """'nvidia-h100-80gb-hbm3' for CUDA, 'cpu-<machine>' otherwise: a file-name slug."""
    if device == "cuda":
        import torch

        name = torch.cuda.get_device_name(0)
    else:
        name = f"cpu-{platform.machine()}"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma list of weight dtypes")
    parser.add_argument("--out", default="docs/validation", type=Path)
    parser.add_argument("--limit", type=int, default=None, help="first N cases only")
    parser.add_argument("--autocast-only", action="store_true", help="the autocast cases only")
    args = parser.parse_args()

    import torch

    from tgauge.matrix import cases
    from tgauge.validate import validate_point

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here", file=sys.stderr)
        return 2
    name = device_name(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / f"{name}.jsonl"
    jsonl.write_text("")
    available = torch.cuda.get_device_properties(0).total_memory if args.device == "cuda" else None
    points, started = [], time.perf_counter()
    selected = [c for c in cases() if c.workload.autocast or not args.autocast_only]
    selected = selected[: args.limit]
    dtypes = args.dtypes.split(",")
    for dtype in dtypes:
        for case in selected:
            workload = case.workload.model_copy(
                update={"dtype": dtype, "compute_dtype": dtype, "kv_cache_dtype": dtype}
            )
            label = dtype
            if case.workload.autocast:  # fp32 weights by definition: once, as the case says
                if dtype != dtypes[0]:
                    continue
                workload, label = case.workload, f"fp32, autocast {case.workload.autocast}"
            spec = case.spec.model_copy(update={"name": f"{case.name} [{label}]"})
            point = validate_point(spec, workload, device=args.device, available=available)
            points.append(point)
            with jsonl.open("a") as fh:
                fh.write(point.model_dump_json() + "\n")
            print(f"{spec.name:45s} {point.status:11s} worst={point.worst}", flush=True)
    facts = {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "seconds": round(time.perf_counter() - started, 1),
        "points": [json.loads(p.model_dump_json()) for p in points],
    }
    (args.out / f"{name}.json").write_text(json.dumps(facts, indent=1) + "\n")
    print(f"wrote {jsonl} and {args.out / (name + '.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
