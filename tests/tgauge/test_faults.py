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
@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGTERM, 143), pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow)],
)
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
@pytest.mark.slow
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
    third = _tgauge(*argv[:5], "seq_len=8..32:8", *argv[6:])  # the lock is free again
    _, err = third.communicate(timeout=600)
    assert third.returncode == 0, err
    seq_lens = [r["workload"]["seq_len"] for r in _records(jsonl)]
    assert sorted(s for s in seq_lens if s <= 32) == [8, 16, 24, 32]  # each point once


# ---- 3 and 5: one record per point; damaged lines skipped, named by line number ----------

TINY = {"arch": "decoder", "d_model": 32, "n_heads": 4, "d_ff": 64, "n_layers": 2,
        "vocab_size": 61, "max_seq_len": 64}  # fmt: skip


def _validate(tmp_path: Path, seq_lens: str):
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps(TINY))
    argv = ["validate", str(spec), "--mode", "prefill", "--out", str(tmp_path / "v"),
            "--sweep", f"seq_len={seq_lens}"]  # fmt: skip
    r = runner.invoke(app, argv)
    assert r.exit_code == 0, r.output
    return r


def _report(tmp_path: Path):
    jsonl = tmp_path / "v" / "validation.jsonl"
    r = runner.invoke(app, ["report", "--out", str(tmp_path / "r"), "--validation", str(jsonl),
                            "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    return r, (tmp_path / "r" / "report.md").read_text()


def test_resume_measures_error_and_old_version_points_again_and_marks_the_old_superseded(
    tmp_path,
):
    from tgauge import __version__

    _validate(tmp_path, "8,16")
    jsonl = tmp_path / "v" / "validation.jsonl"
    old, failed = _records(jsonl)
    old["tgauge_version"] = "0.0.0"  # measured by another version
    failed.update(status="error", rows=[], notes=["RuntimeError: boom"])
    jsonl.write_text(f"{json.dumps(old)}\n{json.dumps(failed)}\n")
    r = _validate(tmp_path, "8,16")
    assert "marked 2 records superseded" in r.stderr
    records = _records(jsonl)
    assert [(x["workload"]["seq_len"], x.get("superseded", False)) for x in records] == [
        (8, True), (16, True), (8, False), (16, False)]  # fmt: skip
    assert [x["tgauge_version"] for x in records[2:]] == [__version__] * 2
    r = _validate(tmp_path, "8,16")  # complete: nothing measured, nothing added
    assert "resuming: 2 of 2 points are already in" in r.stderr and len(_records(jsonl)) == 4
    r, markdown = _report(tmp_path)
    assert f"{jsonl}: skipped 2 superseded records (lines 1, 2)" in r.stderr
    assert "2 points (ok 2)" in markdown  # one row per point


def test_damaged_middle_lines_are_skipped_by_report_and_resume_with_their_line_numbers(
    tmp_path,
):
    _validate(tmp_path, "8,16,32")
    jsonl = tmp_path / "v" / "validation.jsonl"
    r8, r16, r32 = jsonl.read_bytes().splitlines()
    torn, glued, garbage = r16[:40], r32 + r8, b"\x00\xff\xfe binary \x81"
    jsonl.write_bytes(b"\n".join([r8, torn, glued, garbage]) + b"\n")
    r, markdown = _report(tmp_path)
    lines = r.stderr.splitlines()
    assert lines[0].startswith(f"note: {jsonl}:2: skipped a damaged line (not a whole record:")
    assert lines[1].startswith(f"note: {jsonl}:3: skipped a damaged line (not a whole record:")
    assert lines[2] == (f"note: {jsonl}:4: skipped a damaged line (not a whole record: bytes "
                        "that are not UTF-8 text)")  # fmt: skip
    assert "1 points (ok 1)" in markdown
    r = _validate(tmp_path, "8,16,32")  # resume goes on: 16 and 32 measured again
    assert f"{jsonl}:3: skipped a damaged line" in r.stderr
    assert "resuming: 1 of 3 points are already in" in r.stderr
    assert jsonl.read_bytes().splitlines()[1:4] == [torn, glued, garbage]  # kept as they were
    _, markdown = _report(tmp_path)
    assert "3 points (ok 3)" in markdown


# ---- 4. a killed run's leftovers are removed; a report appears in one rename -------------


def _entries(out: Path) -> dict[str, bytes]:
    """What a reader of the report folder sees: report.md, report.html and charts/*."""
    seen = {n: (out / n).read_bytes() for n in ("report.md", "report.html")}
    seen |= {f"charts/{p.name}": p.read_bytes() for p in sorted((out / "charts").iterdir())}
    return seen


@LINUX
@pytest.mark.slow
def test_sigkill_during_report_leaves_the_old_report_and_the_next_run_removes_the_staging(
    tmp_path,
):
    out = tmp_path / "r"
    argv = ["report", "--out", str(out), "--model", "gpt2-small", "-s", "64", "--seq-lens"]
    assert runner.invoke(app, [*argv, "64,128"]).exit_code == 0
    before, live = _entries(out), os.readlink(out / ".report")
    proc = _tgauge(*argv, "64..4096")
    staged = lambda: any(p.name != live for p in out.glob(".report-*"))  # noqa: E731
    _wait(proc, staged)
    time.sleep(0.3)  # while it renders charts into the staging folder
    proc.kill()
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        pytest.skip("the report finished before the kill")
    assert _entries(out) == before  # the old report, whole
    assert len(list(out.glob(".report-*"))) == 2  # ... and the killed run's staging folder
    (out / ".sweep.csv.abc123.tmp").write_text("a,b\n1,")  # what a killed sweep leaves
    r = runner.invoke(app, [*argv, "64,256"])
    assert r.exit_code == 0, r.output
    assert [p.name for p in out.glob(".report-*")] == [os.readlink(out / ".report")]
    assert not list(out.glob(".*.tmp"))
    assert _entries(out) != before
    assert all((out / n).is_symlink() for n in ("report.md", "report.html", "charts"))


def test_report_files_are_one_folder_made_live_by_one_symlink(tmp_path):
    out = tmp_path / "r"
    argv = ["report", "--out", str(out), "--model", "gpt2-small", "-s", "64", "--seq-lens"]
    assert runner.invoke(app, [*argv, "64,128"]).exit_code == 0
    first = os.readlink(out / ".report")
    assert runner.invoke(app, [*argv, "64,256"]).exit_code == 0
    second = os.readlink(out / ".report")
    assert first != second and not (out / first).exists()  # the old report folder is gone
    assert (out / "report.md").resolve() == out / second / "report.md"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".report", second, "charts", "report.html", "report.md"]
    )


# ---- 7. sweeps stream their rows; one file mode for every output --------------------------


def test_streamed_sweep_files_and_json_are_the_text_of_the_whole_sweep(tmp_path, monkeypatch):
    from estimator.plan import sweep as plan_sweep

    argv = ["sweep", "gpt2-small", "-s", "512", "--vary", "seq_len=64,128,2048", "--vary",
            "batch_size=1,2", "--vary", "attention=eager,fused", "--json"]  # fmt: skip
    whole = runner.invoke(app, [*argv, "--out", str(tmp_path / "whole")])  # one chunk
    monkeypatch.setattr(plan_sweep, "PROGRESS_EVERY", 5)  # 12 points: chunks of 5, 5, 2
    chunked = runner.invoke(app, [*argv, "--out", str(tmp_path / "chunked")])
    assert whole.exit_code == chunked.exit_code == 0, chunked.output
    for name in ("sweep.csv", "sweep.json"):
        assert (tmp_path / "chunked" / name).read_text() == (tmp_path / "whole" / name).read_text()
    assert chunked.stdout == whole.stdout
    records = json.loads(chunked.stdout)
    assert chunked.stdout == json.dumps(records, indent=2) + "\n"  # print_json's text
    text = (tmp_path / "chunked" / "sweep.json").read_text()
    assert text == json.dumps(json.loads(text), indent=1)  # json.dumps' text, chunk by chunk
    points = json.loads(text)["points"]
    assert [{k: v for k, v in r.items() if k != "implementation"} for r in records] == points
    assert len(points) == 12 and {r["implementation"] for r in records} == {"reference"}
    table = runner.invoke(app, argv[:-1])
    assert table.exit_code == 0 and "12 points" in table.stdout


def test_sweep_and_validate_outputs_share_one_file_mode(tmp_path):
    old = os.umask(0o022)
    try:
        assert runner.invoke(app, ["sweep", "gpt2-small", "--vary", "seq_len=64,128", "--out",
                                   str(tmp_path)]).exit_code == 0  # fmt: skip
        _validate(tmp_path, "8")
        jsonl = tmp_path / "v" / "validation.jsonl"
        jsonl.write_text(jsonl.read_text() * 2)  # a duplicate: the rerun rewrites the file
        _validate(tmp_path, "8")
        assert _records(jsonl)[0].get("superseded")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in
             [tmp_path / "sweep.csv", tmp_path / "sweep.json", jsonl]}  # fmt: skip
    assert modes == {"sweep.csv": 0o644, "sweep.json": 0o644, "validation.jsonl": 0o644}


@LINUX
@pytest.mark.slow
def test_sweep_memory_does_not_grow_with_the_grid():
    # bounded memory: the peak of 160,000 points is that of 10,000 (before issue 24 it grew by
    # about 4 KiB a point: 2.0 GB for 524,288). Figures: benchmarks/bench_sweep_stream.py
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_sweep_stream import run

    _, small, _ = run(100)
    _, large, written = run(400)
    assert written > 80 * 2**20  # the 160,000 rows reached the files
    assert large < small + 32 * 2**20, (small, large)


# ---- 8. the memory budget of a CPU validation is the limit the process has ---------------


def test_memory_budget_reads_the_cgroup_limits_along_the_path(tmp_path):
    from tgauge.devices import memory_budget

    proc, v2, v1 = tmp_path / "proc", tmp_path / "v2", tmp_path / "v1"
    proc.mkdir()
    (proc / "status").write_text("VmSize:\t  1000 kB\n")
    (proc / "cgroup").write_text("0::/user.slice/job\n")
    (v2 / "user.slice" / "job").mkdir(parents=True)
    (v2 / "user.slice" / "memory.max").write_text("3000000000\n")  # the parent's is lower
    (v2 / "user.slice" / "job" / "memory.max").write_text("max\n")
    assert memory_budget(v2, proc).cgroup_bytes == 3_000_000_000
    (proc / "cgroup").write_text("5:cpu:/x\n4:memory:/docker/abc\n")  # v1, a container's view
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("2000000000\n")
    budget = memory_budget(v1, proc)
    assert budget.cgroup_bytes == 2_000_000_000 and budget.usable_bytes <= 2_000_000_000
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # no limit
    assert memory_budget(v1, proc).cgroup_bytes is None


@LINUX
def test_validate_under_an_address_space_limit_predicts_the_point_does_not_fit(tmp_path):
    # the prlimit run: the record said predicted_fits true (the machine's RAM). Here
    # the process has ~600 MiB of address space left; gpt2-small's train step needs ~2.3 GiB
    child = f"""
import resource, sys
from pathlib import Path
import torch
from tgauge.cli import main
status = Path("/proc/self/status").read_text().splitlines()
mapped = next(int(x.split()[1]) * 1024 for x in status if x.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (mapped + 600 * 2**20, resource.RLIM_INFINITY))
sys.argv = ["tgauge", "validate", "gpt2-small", "-s", "64", "--out", {str(tmp_path)!r}]
main()
"""
    r = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True, text=True,
                       env=os.environ | {"PYTHONPATH": str(ROOT)}, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    (record,) = _records(tmp_path / "validation.jsonl")
    assert (record["status"], record["predicted_fits"]) == ("did_not_fit", False)


# ---- all together: SIGTERM / SIGINT at random moments -------------------------------------


def _no_temporaries(folder: Path) -> None:
    live = os.readlink(folder / ".report") if (folder / ".report").is_symlink() else None
    left = [p.name for p in folder.glob(".*") if p.name not in (".report", live)]
    assert left == [], left


def _signal_at_random(rng, argv: list[str], ready) -> tuple[int, str]:
    """Start ``tgauge argv``, wait until ``ready()``, then a random moment later send SIGTERM
    or SIGINT (seeded); the exit code and stderr. A stop is exit 143 / 130 and one line."""
    proc = _tgauge(*argv)
    _wait(proc, lambda: _catches(proc.pid, signal.SIGTERM) and ready())
    signum = rng.choice([signal.SIGTERM, signal.SIGINT])
    time.sleep(rng.uniform(0, 2.5))
    if proc.poll() is None:
        proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    if proc.returncode != 0:
        assert proc.returncode == {signal.SIGTERM: 143, signal.SIGINT: 130}[signum], err
        (line,) = err.splitlines()
        assert line.startswith("interrupted: "), line
    return proc.returncode, err


@LINUX
@pytest.mark.slow
def test_signals_at_random_moments_leave_whole_files_and_a_rerun_completes_the_set(tmp_path):
    import random

    rng = random.Random(24)
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps(TINY))

    # validate: every line a whole record, then a rerun adds each missing point once
    out = tmp_path / "v"
    jsonl = out / "validation.jsonl"
    argv = ["validate", str(spec), "--mode", "train", "--sweep", "seq_len=8..64:8", "--sweep",
            "batch_size=1,2", "--out", str(out)]  # fmt: skip
    for _ in range(3):
        _signal_at_random(rng, argv, lambda: jsonl.exists())
        records = _records(jsonl)  # every line parses: whole records only
        assert all(r["status"] == "ok" for r in records)
        _no_temporaries(out)
    proc = _tgauge(*argv)
    assert proc.wait(timeout=600) == 0, proc.communicate()[1]
    points = [(r["workload"]["seq_len"], r["workload"]["batch_size"]) for r in _records(jsonl)]
    assert sorted(points) == sorted((s, b) for s in range(8, 65, 8) for b in (1, 2))

    # sweep: the previous files or the new ones, never a mix, no temporary
    out = tmp_path / "s"
    argv = ["sweep", "gpt2-small", "--vary", "seq_len=1..200:1", "--vary", "batch_size=1..200:1",
            "--out", str(out)]  # fmt: skip
    assert runner.invoke(app, ["sweep", "gpt2-small", "--vary", "seq_len=64", "--out",
                               str(out)]).exit_code == 0  # fmt: skip
    before = {n: (out / n).read_bytes() for n in ("sweep.csv", "sweep.json")}
    for _ in range(3):
        code, _ = _signal_at_random(rng, argv, lambda: list(out.glob(".sweep.csv.*.tmp")))
        now = {n: (out / n).read_bytes() for n in ("sweep.csv", "sweep.json")}
        if code != 0:
            assert now == before
        else:
            assert len(json.loads(now["sweep.json"])["points"]) == 40_000
            assert now["sweep.csv"].count(b"\n") == 40_001
        _no_temporaries(out)
    proc = _tgauge(*argv)
    assert proc.wait(timeout=600) == 0
    assert len(json.loads((out / "sweep.json").read_text())["points"]) == 40_000

    # report: the old report or the new one, whole; its staging folder never left
    out = tmp_path / "r"
    base = ["report", "--out", str(out), "--model", "gpt2-small", "-s", "64", "--seq-lens"]
    assert runner.invoke(app, [*base, "64,128"]).exit_code == 0
    old = _entries(out)
    for _ in range(3):
        code, err = _signal_at_random(rng, [*base, "64..1024"], lambda: (out / ".report").exists())
        now = _entries(out)
        if now != old:  # the new report, whole: every chart report.md names is there
            charts = [x.split("(charts/")[1][:-1] for x in now["report.md"].decode().splitlines()
                      if "(charts/" in x]  # fmt: skip
            assert charts and all(f"charts/{c}" in now for c in charts)
            assert now["report.html"].endswith(b"</html>\n")
            old = now
        _no_temporaries(out)
    proc = _tgauge(*base, "64..1024")
    assert proc.wait(timeout=600) == 0
    _no_temporaries(out)


@LINUX
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_before_the_command_gets_under_way_is_one_line_too(tmp_path, signum, code):
    # sent as soon as tgauge's main installed its handler: validate is still importing torch
    proc = _tgauge("validate", TINY_DECODER, "-s", "8", "--out", str(tmp_path / "v"))
    _wait(proc, lambda: _catches(proc.pid, signal.SIGTERM))
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert err.splitlines() == ["interrupted: stopped before the command finished"]
    assert not (tmp_path / "v").exists() or not any((tmp_path / "v").iterdir())


@LINUX
def test_streamed_sweep_past_a_file_size_limit_keeps_the_previous_files(tmp_path):
    # a real write error (RLIMIT_FSIZE: EFBIG once a file passes 64 KiB; Python ignores
    # SIGXFSZ) in the middle of the stream: one line, the old files whole, no temporary
    import resource

    assert runner.invoke(app, ["sweep", "gpt2-small", "--vary", "seq_len=64", "--out",
                               str(tmp_path)]).exit_code == 0  # fmt: skip
    before = {n: (tmp_path / n).read_bytes() for n in ("sweep.csv", "sweep.json")}

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))

    r = subprocess.run(
        [sys.executable, "-m", "tgauge.cli", "sweep", "gpt2-small", "--vary", "seq_len=1..100:1",
         "--vary", "batch_size=1..100:1", "--out", str(tmp_path)],
        cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        preexec_fn=limit, timeout=600,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.splitlines()
    assert line.startswith(f"error: cannot write {tmp_path / 'sweep.'}") and "too large" in line
    assert {n: (tmp_path / n).read_bytes() for n in ("sweep.csv", "sweep.json")} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.csv", "sweep.json"]
