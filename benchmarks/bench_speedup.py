"""Speed of this tree against a baseline commit, measured in one run on this machine.

Run: .venv/bin/python benchmarks/bench_speedup.py [--baseline b760064] [--quick]

The baseline is checked out into a temporary git worktree and every measurement runs in a
fresh subprocess for each tree in turn (baseline, this tree), with PYTHONPATH pointing at the
tree, so both see the same machine load; ratios are what to compare (the machines are shared
and noisy). Measured:
  sweep bench        benchmarks/bench_sweep.py of each tree: a 10,000-point llama-3-8b
                     training sweep (points/s, compilation of the structure included)
  sweep CLI          tgauge sweep llama-3-8b --mode train --dtype bf16
                     --vary seq_len=8..8000:8 --vary batch_size=1..100:1 --out DIR
                     (100,000 points, sweep.csv and sweep.json written; wall seconds)
  estimate() cold    the first call of each preset x mode in a fresh process (calls/s,
                     the median of 7 processes)
  estimate() warm    200 more calls of each (calls/s)
  decode estimate    llama-3-8b, prompt 4,096, 128 / 16,384 / 122,880 new tokens (s/call)
  fit decode         tgauge fit llama-3-8b --gpu a100-80gb --mode decode --prompt-len 4096
                     --new-tokens 4096 (wall seconds)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLD_RUNS = 7  # fresh processes: one pass of first calls is ~40 ms, noisy alone

_ESTIMATE = """
import sys, time
from estimator import PRESETS, Workload, estimate
cases = []
for name, spec in PRESETS.items():
    s = spec.n_positions if spec.is_patch_input else 512
    modes = ["train", "prefill"] + ([] if spec.arch == "encoder" else ["decode"])
    cases += [(spec, Workload(mode=m, seq_len=s, new_tokens=16)) for m in modes]
t = time.perf_counter()
for spec, w in cases:
    estimate(spec, w)
cold = len(cases) / (time.perf_counter() - t)
if "cold" in sys.argv:
    print(cold)
    raise SystemExit
for _ in range(50):  # what a search or a loop does first
    for spec, w in cases:
        estimate(spec, w)
t = time.perf_counter()
for _ in range(200):
    for spec, w in cases:
        estimate(spec, w)
warm = 200 * len(cases) / (time.perf_counter() - t)
print(cold, warm)
"""

_DECODE = """
import sys, time
from estimator import Workload, estimate, get_preset
spec = get_preset("llama-3-8b")
n = int(sys.argv[1])
longer = {"rope_scaling": 16.0} if "rope_scaling" in Workload.model_fields else {}
w = Workload(mode="decode", dtype="bf16", attention_impl="fused", seq_len=4096,
             prompt_len=4096, new_tokens=n, **longer)
estimate(spec, w)
calls, t = 0, time.perf_counter()
while calls < 3 or (time.perf_counter() - t < 0.5 and calls < 200):
    estimate(spec, w)
    calls += 1
print((time.perf_counter() - t) / calls)
"""


def _python(tree: Path, args: list[str], timeout: float = 600) -> tuple[str, float]:
    """stdout and wall seconds of ``python ARGS`` with ``tree`` first on the path."""
    env = {"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True,
        timeout=timeout, check=True,
    )  # fmt: skip
    return out.stdout, time.perf_counter() - start


def measure(tree: Path, quick: bool) -> dict[str, float]:
    """Every measurement of the module docstring on ``tree``."""
    got: dict[str, float] = {}
    text, _ = _python(tree, ["benchmarks/bench_sweep.py"])
    got["sweep bench (points/s)"] = float(text.split("=")[-1].split()[0].replace(",", ""))
    with tempfile.TemporaryDirectory() as out:
        grid = ["--vary", "seq_len=8..8000:8", "--vary", "batch_size=1..100:1"]
        cmd = ["-m", "tgauge.cli", "sweep", "llama-3-8b", "--mode", "train", "--dtype", "bf16"]
        _, wall = _python(tree, [*cmd, *grid, "--out", out])
    got["sweep CLI 100k (s)"] = wall
    colds = [float(_python(tree, ["-c", _ESTIMATE, "cold"])[0]) for _ in range(COLD_RUNS)]
    got[f"estimate() cold, median of {COLD_RUNS} (calls/s)"] = statistics.median(colds)
    got["estimate() warm (calls/s)"] = float(_python(tree, ["-c", _ESTIMATE])[0].split()[1])
    for n in (128, 16384) if quick else (128, 16384, 122880):
        text, _ = _python(tree, ["-c", _DECODE, str(n)])
        got[f"decode estimate, {n:,} new tokens (s)"] = float(text)
    fit = ["-m", "tgauge.cli", "fit", "llama-3-8b", "--gpu", "a100-80gb", "--mode", "decode"]
    _, wall = _python(tree, [*fit, "--prompt-len", "4096", "--new-tokens", "4096"])
    got["fit decode 4,096 new tokens (s)"] = wall
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="b760064", help="commit to compare with")
    parser.add_argument("--quick", action="store_true", help="skip the 122,880-token decode")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(base), args.baseline],
            cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip
        try:
            before = measure(base, args.quick)
            after = measure(ROOT, args.quick)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT)
    width = max(map(len, before))
    print(f"{'measure':<{width}}  {args.baseline:>12}  {'this tree':>12}  speed-up")
    for key, b in before.items():
        a = after[key]
        up = a / b if "/s" in key else b / a  # rates: higher is better; seconds: lower
        print(f"{key:<{width}}  {b:>12,.4g}  {a:>12,.4g}  {up:>7.1f}x")


if __name__ == "__main__":
    main()
