"""`import estimator; estimator.estimate(...)` never loads torch (subprocess oracle)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "fvcore", "pynvml", "matplotlib")


def test_estimate_leaves_heavy_modules_unloaded():
    code = (
        "import sys, estimator\n"
        "for name in ('gpt2-small', 't5-small', 'vit-b-16', 'mistral-7b'):\n"
        "    spec = estimator.get_preset(name)\n"
        "    mode = 'train' if spec.is_patch_input else 'decode' if spec.arch != 'encoder' "
        "else 'train'\n"
        "    s = spec.n_positions if spec.is_patch_input else 32\n"
        "    estimator.estimate(spec, estimator.Workload(mode=mode, seq_len=s, new_tokens=2))\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
