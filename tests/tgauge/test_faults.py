"""Issue 24: real faults, round two. Real signals sent to real `tgauge` processes, two runs into
one folder, damaged and duplicated records, a killed run's leftovers, streaming sweeps and the
memory limit a process actually runs under. Each test names the issue's failure it covers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tgauge.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
TINY_DECODER = str(ROOT / "docs" / "validation" / "tiny-decoder.json")
LINUX = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")


def _tgauge(*argv: str, columns: str | None = "200") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | {"PYTHONPATH": str(ROOT)}
    if columns is not None:
        env["COLUMNS"] = columns
    return subprocess.Popen(
        [sys.executable, "-m", "tgauge.cli", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (Linux: SigCgt of /proc/pid/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def _wait(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, "timed out"
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)


def _records(jsonl: Path) -> list[dict]:
    return [json.loads(x) for x in jsonl.read_text().splitlines()]


# ---- 1 and 6: a signal stops validate at once, in one line -------------------------------


@LINUX
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_a_validate_point_stops_the_run_in_one_unwrapped_line(tmp_path, signum, code):
    # the reproducer (1), with a long --out path and stderr a pipe at 80 columns (6)
    out = tmp_path / ("a-long-folder-name-" * 8) / "v"
    jsonl = out / "validation.jsonl"
    proc = _tgauge("validate", TINY_DECODER, "--mode", "train", "--sweep",
                   "seq_len=16,32,64,128,256,512", "--sweep", "batch_size=1,2,4,8",
                   "--out", str(out), columns=None)  # fmt: skip
    _wait(proc, lambda: jsonl.exists() and jsonl.read_text().count("\n") >= 1)
    proc.send_signal(signum)  # while the next point runs
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    records = _records(jsonl)
    assert err.splitlines() == [
        f"interrupted: {len(records)} of 24 points finished and appended to {jsonl}"
    ]
    assert len(records) < 24  # it stopped, it did not run to the end
    # the point in flight is not a result: no error record, no "Interrupted" note
    assert all(r["status"] == "ok" for r in records), records


# ---- 2. one writer per output folder ------------------------------------------------------


@LINUX
def test_second_run_into_a_busy_folder_is_refused_and_a_killed_run_leaves_no_stale_lock(
    tmp_path,
):
    out = tmp_path / "v"
    jsonl = out / "validation.jsonl"
    argv = ("validate", TINY_DECODER, "--mode", "prefill", "--sweep", "seq_len=8..400:8",
            "--out", str(out))  # fmt: skip
    first = _tgauge(*argv)
    _wait(first, lambda: jsonl.exists() and jsonl.read_text().count("\n") >= 1)
    second = _tgauge(*argv)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 2, err
    assert err.splitlines() == [
        f"error: --out={str(out)!r} is in use by another tgauge run (pid {first.pid}): one run "
        "writes into a folder at a time; wait for it to end or give another folder"
    ]
    first.kill()  # SIGKILL: no handler runs; the kernel drops the lock with the process
    first.wait()
    assert sorted(p.name for p in out.iterdir()) == ["validation.jsonl"]  # no lock file
    third = _tgauge(*argv)
    _, err = third.communicate(timeout=600)
    assert third.returncode == 0, err
    seq_lens = [r["workload"]["seq_len"] for r in _records(jsonl)]
    assert sorted(seq_lens) == list(range(8, 401, 8))  # every point once
