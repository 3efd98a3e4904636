"""Issue 12: bad input, full disks and interrupted runs.

Each case states the command, its exit code, its one stderr line and the files afterwards:
no traceback, user text printed literally, bounded reads and work, nothing half-written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tgauge.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]

TINY = {"arch": "decoder", "d_model": 32, "n_heads": 4, "d_ff": 64, "n_layers": 2,
        "vocab_size": 61, "max_seq_len": 64}  # fmt: skip
GPT2 = {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 100,
        "n_positions": 128}  # fmt: skip
LLAMA = {"model_type": "llama", "num_attention_heads": 4, "hidden_size": 64,
         "num_hidden_layers": 2, "intermediate_size": 128, "vocab_size": 100,
         "max_position_embeddings": 128}  # fmt: skip
VIT = {"model_type": "vit", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
       "intermediate_size": 128, "image_size": 32, "patch_size": 16}  # fmt: skip
T5 = {"model_type": "t5", "d_model": 64, "num_layers": 2, "num_heads": 4, "d_kv": 16,
      "d_ff": 128, "vocab_size": 100}  # fmt: skip
GPU = {"name": "mygpu", "total_gib": 16, "peak_tflops": {"fp32": 10}, "bandwidth_tb_s": 1}
BOMB = (
    "model_type: gpt2\n"
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "n_embd: *c\n"
)


def one_error(argv: list[str], fragment: str, code: int = 2) -> str:
    """Run argv in-process: exit ``code``, nothing on stdout, one stderr line with fragment."""
    r = runner.invoke(app, argv)
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    return lines[0]


def write(path: Path, data: object) -> str:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


# ---- 1. tracebacks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["estimate", "foo[/]bar"], "no such file: foo[/]bar"),
        (["estimate", "[bold]x"], "MODEL='[bold]x'"),
        (["fit", "gpt2-small", "--gpu", "[/]"], "gpu='[/]'"),
        (["validate", "{tiny}", "-s", "8", "--device", "[/]"], "device='[/]'"),
        (["sweep", "gpt2-small", "--vary", "attention_pattern=[/]"], "attention_pattern='[/]'"),
    ],
)
def test_markup_in_user_text_is_printed_literally(tmp_path, argv, fragment):
    tiny = write(tmp_path / "tiny.json", TINY)
    one_error([a.format(tiny=tiny) for a in argv], fragment)


def test_spec_named_with_markup_estimates_and_prints_its_name(tmp_path):
    spec = write(tmp_path / "s.json", TINY | {"name": "[/]x[bold]"})
    r = runner.invoke(app, ["estimate", spec, "-s", "8"])
    assert r.exit_code == 0, r.output
    assert "[/]x[bold]: train" in r.stdout


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        (LLAMA | {"num_attention_heads": 0}, "num_attention_heads=0 is invalid"),
        (VIT | {"patch_size": 0}, "patch_size=0 is invalid"),
        (LLAMA | {"hidden_size": "256"}, "hidden_size='256' is invalid"),
        (GPT2 | {"n_embd": "768"}, "n_embd='768' is invalid: an integer"),
        (LLAMA | {"rope_parameters": ["x"]}, "rope_parameters=['x'] is invalid"),
        (LLAMA | {"rope_parameters": {"rope_theta": "big"}}, "rope_theta='big' is invalid"),
        (T5 | {"feed_forward_proj": 5}, "feed_forward_proj=5 is invalid: a string"),
        (GPT2 | {"layer_norm_epsilon": -1}, "layer_norm_epsilon=-1 is invalid"),
        (GPT2 | {"n_layer": True}, "n_layer=True is invalid"),
        (GPT2 | {"model_type": ["gpt2"]}, "model_type=['gpt2'] must be a string"),
    ],
)
def test_hf_config_value_of_wrong_type_or_sign_is_rejected(tmp_path, config, fragment):
    one_error(["estimate", write(tmp_path / "config.json", config)], fragment)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"total_gib": float("inf")}, "total_gib=inf is invalid"),
        ({"total_gib": 1e300}, "total_gib=1e+300 is invalid"),
        ({"total_gib": -1}, "total_gib=-1 is invalid"),
        ({"peak_tflops": {"fp32": 0}}, "peak_tflops.fp32=0 is invalid"),
        ({"peak_tflops": {"fp32": -5}}, "peak_tflops.fp32=-5 is invalid"),
        ({"peak_tflops": {"fp32": float("inf")}}, "peak_tflops.fp32=inf is invalid"),
        ({"bandwidth_tb_s": -1}, "bandwidth_tb_s=-1 is invalid"),
        ({"bandwidth_tb_s": float("nan")}, "bandwidth_tb_s=nan is invalid"),
        ({"peak_tflops": "fast"}, "peak_tflops='fast' is invalid"),
    ],
)
def test_custom_gpu_field_must_be_finite_and_positive(tmp_path, fields, fragment):
    gpu = write(tmp_path / "gpu.json", json.dumps(GPU | fields))  # Infinity/NaN as JSON allows
    one_error(["fit", "gpt2-small", "-s", "64", "--gpu", gpu], fragment)


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"points": "abc", "fields": ["seq_len"]}, "points='abc' must be a list"),
        ({"points": [], "fields": 5}, "fields=5 must be a list"),
        ({"points": [{"seq_len": 1, "flops": "12"}], "fields": ["seq_len"]}, "flops='12'"),
        ({"points": [{"seq_len": 1, "fits": "yes"}], "fields": ["seq_len"]}, "fits='yes'"),
        ([1, 2], "needs an object"),
    ],
)
def test_report_rejects_malformed_sweep_json(tmp_path, doc, fragment):
    sweep = write(tmp_path / "sweep.json", doc)
    one_error(["report", "--out", str(tmp_path / "r"), "--sweep", sweep], fragment)
    assert not (tmp_path / "r" / "report.md").exists()


def test_report_rejects_deeply_nested_validation_json(tmp_path):
    deep = write(tmp_path / "v.jsonl", "[" * 100_000 + "]" * 100_000 + "\n")
    one_error(["report", "--out", str(tmp_path / "r"), "--validation", deep], "nested too deeply")


def test_presets_with_stdout_closed_exits_0_without_traceback():
    r = subprocess.run(
        [sys.executable, "-m", "tgauge.cli", "presets"],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        stdout=None,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.close(1),  # `tgauge presets >&-`
        timeout=120,
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr


# ---- 2. unbounded work ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["sweep", "llama-2-7b", "--mode", "decode", "--vary", "new_tokens=1000000000"],
        ["validate", "{tiny}", "--mode", "decode", "-s", "4", "--sweep", "new_tokens=1000000000"],
    ],
)
def test_new_tokens_cap_holds_in_sweeps(tmp_path, argv):
    tiny = write(tmp_path / "tiny.json", TINY | {"position": "rotary"})
    one_error([a.format(tiny=tiny) for a in argv], "new_tokens=1000000000")


def test_library_caps_new_tokens():
    from pydantic import ValidationError

    from estimator.spec import MAX_NEW_TOKENS, Workload

    assert MAX_NEW_TOKENS == 2**17  # the stated cap: decode is walked step by step
    with pytest.raises(ValidationError, match="less than or equal to 131072"):
        Workload(mode="decode", new_tokens=10**30)


def test_yaml_bomb_in_hf_style_config_is_refused_without_expanding(tmp_path):
    line = one_error(["estimate", write(tmp_path / "config.yaml", BOMB)], "aliases")
    assert len(line) < 300 and "lol" not in line


def test_duplicate_keys_are_rejected(tmp_path):
    dup_json = write(tmp_path / "s.json", '{"d_model": 32, "d_model": 64}')
    one_error(["estimate", dup_json], "duplicate key 'd_model'")
    dup_yaml = write(tmp_path / "s.yaml", "arch: decoder\narch: encoder\n")
    one_error(["estimate", dup_yaml], "duplicate key 'arch'")


@pytest.mark.parametrize("option", [None, "--validation", "--sweep", "--gpu"])
def test_dev_zero_and_fifo_are_refused_not_read(tmp_path, option):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # no writer: opening it for reading would block forever
    for path in ("/dev/zero", str(fifo)):
        argv = {
            None: ["estimate", path],
            "--validation": ["report", "--out", str(tmp_path / "r"), "--validation", path],
            "--sweep": ["report", "--out", str(tmp_path / "r"), "--sweep", path],
            "--gpu": ["fit", "gpt2-small", "--gpu", path],
        }[option]
        if option == "--gpu" and path == "/dev/zero":
            continue  # a GPU argument is read as a file only when it ends in .json
        one_error(argv, "not a regular file")


def test_oversized_spec_file_is_refused(tmp_path):
    from estimator.spec.files import MAX_CONFIG_BYTES

    big = tmp_path / "big.json"
    big.write_text('{"name": "' + "x" * MAX_CONFIG_BYTES + '"}')
    one_error(["estimate", str(big)], "larger than 16 MiB")


def test_model_copy_with_negative_seq_len_is_revalidated_by_estimate():
    from pydantic import ValidationError

    from estimator import estimate
    from estimator.spec import Workload
    from estimator.spec.presets import get_preset

    bad = Workload().model_copy(update={"seq_len": -5})
    with pytest.raises(ValidationError, match="seq_len"):
        estimate(get_preset("gpt2-small"), bad)
    with pytest.raises(ValidationError, match="seq_len"):
        Workload().replace(seq_len=-5)


def test_report_rejects_negative_seq_lens(tmp_path):
    out = tmp_path / "r"
    one_error(["report", "--out", str(out), "--model", "gpt2-small", "--seq-lens", "-5,16"],
              "--seq-lens='-5,16' is invalid")  # fmt: skip
    assert not out.exists() or not any(out.iterdir())


def test_report_seq_lens_past_max_positions_is_an_error_not_empty_charts(tmp_path):
    out = tmp_path / "r"
    argv = ["report", "--out", str(out), "--model", "gpt2-small", "--seq-lens", "2048,4096"]
    one_error(argv, "past its max_seq_len=1024")
    assert not out.exists() or not any(out.iterdir())


def test_report_seq_lens_partly_past_max_positions_says_so(tmp_path):
    argv = ["report", "--out", str(tmp_path), "--model", "gpt2-small", "-s", "64",
            "--seq-lens", "512,1024,2048"]  # fmt: skip
    r = runner.invoke(app, argv)
    assert r.exit_code == 0, r.output
    assert r.stderr.startswith("note: Charts stop at s=1024") and "2048" in r.stderr
    assert "left out: 2048" in (tmp_path / "report.md").read_text()


# ---- 3. lost or half-written data ----------------------------------------------------------


def _full_disk_after(n_bytes: int):
    """A stand-in for safeio._write: ``n_bytes`` reach the file, then the disk is full."""
    import errno

    left = [n_bytes]

    def write(fd: int, data) -> int:
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = os.write(fd, bytes(data[: left[0]]))
        left[0] -= n
        return n

    return write


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_sweep_on_a_full_disk_keeps_the_previous_files_whole(tmp_path, monkeypatch):
    from tgauge import safeio

    good = ["sweep", "gpt2-small", "--vary", "seq_len=64,128", "--out", str(tmp_path)]
    assert runner.invoke(app, good).exit_code == 0
    before = _files(tmp_path)
    monkeypatch.setattr(safeio, "_write", _full_disk_after(100))
    line = one_error([*good[:-3], "seq_len=64,128,256", "--out", str(tmp_path)], "No space left")
    assert str(tmp_path / "sweep.csv") in line  # the error names the file
    assert _files(tmp_path) == before  # old csv and json whole, no temporary file left


def test_validate_on_a_full_disk_leaves_no_partial_line(tmp_path, monkeypatch):
    from tgauge import safeio

    spec = write(tmp_path / "tiny.json", TINY)
    out = tmp_path / "v"
    argv = ["validate", spec, "--mode", "prefill", "-s", "8", "--out", str(out)]
    assert runner.invoke(app, argv).exit_code == 0
    before = (out / "validation.jsonl").read_bytes()
    monkeypatch.setattr(safeio, "_write", _full_disk_after(50))
    line = one_error([*argv, "--sweep", "seq_len=16,32"], "only 50 of")
    assert str(out / "validation.jsonl") in line
    assert (out / "validation.jsonl").read_bytes() == before  # one whole line, as before


def test_partial_last_line_is_skipped_by_report_and_cut_by_the_next_run(tmp_path):
    spec = write(tmp_path / "tiny.json", TINY)
    out = tmp_path / "v"
    argv = ["validate", spec, "--mode", "prefill", "-s", "8", "--out", str(out)]
    assert runner.invoke(app, argv).exit_code == 0
    jsonl = out / "validation.jsonl"
    with jsonl.open("a") as fh:
        fh.write('{"model": "custom", "dev')  # what a crash mid-write leaves
    r = runner.invoke(app, ["report", "--out", str(tmp_path / "r"), "--validation", str(jsonl)])
    assert r.exit_code == 0, r.output
    assert r.stderr.startswith(f"note: {jsonl}:2: skipped a partial last line")
    r = runner.invoke(app, [*argv, "--sweep", "seq_len=8,16"])
    assert r.exit_code == 0, r.output
    assert "removed a partial last line (24 bytes)" in r.stderr
    records = [json.loads(x) for x in jsonl.read_text().splitlines()]  # every line whole
    assert [x["workload"]["seq_len"] for x in records] == [8, 16]


def test_validate_rerun_into_the_same_folder_resumes(tmp_path):
    from tgauge import __version__

    spec = write(tmp_path / "tiny.json", TINY)
    out = tmp_path / "v"
    argv = ["validate", spec, "--mode", "prefill", "--out", str(out), "--sweep"]
    assert runner.invoke(app, [*argv, "seq_len=8,16"]).exit_code == 0
    r = runner.invoke(app, [*argv, "seq_len=8,16,32"])
    assert r.exit_code == 0, r.output
    assert "resuming: 2 of 3 points are already in" in r.stderr
    records = [json.loads(x) for x in (out / "validation.jsonl").read_text().splitlines()]
    assert [x["workload"]["seq_len"] for x in records] == [8, 16, 32]
    assert {x["tgauge_version"] for x in records} == {__version__}
    first, second = records[0]["run_id"], records[2]["run_id"]
    assert records[1]["run_id"] == first and first and second and first != second


def test_report_on_a_full_disk_writes_no_report_file(tmp_path, monkeypatch):
    import errno

    from tgauge.report import charts

    out = tmp_path / "r"
    argv = ["report", "--out", str(out), "--model", "gpt2-small", "-s", "64", "--seq-lens",
            "64,128"]  # fmt: skip
    assert runner.invoke(app, argv).exit_code == 0
    before = _files(out)
    real, calls = charts.render, []

    def render(data, folder):
        calls.append(data.name)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(folder / "x.svg"))
        return real(data, folder)

    monkeypatch.setattr(charts, "render", render)
    line = one_error([*argv[:-1], "64,256"], "No space left on device")
    assert str(out) in line and "no report file was written" in line
    assert _files(out) == before  # the previous report whole, no staging folder left
    shown = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert shown == ["charts", "report.html", "report.md"]
    # issue 24: the entries are symlinks through .report to the one live report folder
    assert sorted(p.name for p in out.glob(".report*")) == [".report", os.readlink(out / ".report")]


def _tgauge(*argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tgauge.cli", *argv],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (Linux: SigCgt of /proc/pid/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_sigterm_stops_a_sweep_and_keeps_the_previous_files(tmp_path):
    import signal
    import time

    assert runner.invoke(app, ["sweep", "gpt2-small", "--vary", "seq_len=64", "--out",
                               str(tmp_path)]).exit_code == 0  # fmt: skip
    before = _files(tmp_path)
    proc = _tgauge("sweep", "gpt2-small", "--vary", "seq_len=1..1000:1", "--vary",
                   "batch_size=1..900:1", "--out", str(tmp_path), "--json")  # fmt: skip
    deadline = time.monotonic() + 300
    # the sweep of 900,000 points is under way: its rows stream into a staged file (issue 24)
    while not list(tmp_path.glob(".sweep.csv.*.tmp")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == [
        "interrupted: nothing written; sweep.csv and sweep.json in the --out folder are as "
        "they were"
    ]
    assert _files(tmp_path) == before


def test_sigint_stops_validate_and_says_how_many_points_were_kept(tmp_path):
    import signal
    import time

    spec = write(tmp_path / "tiny.json", TINY)
    jsonl = tmp_path / "v" / "validation.jsonl"
    proc = _tgauge("validate", spec, "--mode", "prefill", "--sweep", "seq_len=8..64:1",
                   "--out", str(tmp_path / "v"))  # fmt: skip
    deadline = time.monotonic() + 300
    while not (jsonl.exists() and jsonl.read_text().count("\n") >= 1):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    (line,) = err.strip().splitlines()
    kept = len(jsonl.read_text().splitlines())
    assert line == f"interrupted: {kept} of 57 points finished and appended to {jsonl}"
    assert all(json.loads(x) for x in jsonl.read_text().splitlines())


def test_cpu_out_of_memory_is_did_not_fit_and_frees_the_points_tensors(monkeypatch):
    import gc
    import weakref

    from estimator.spec import ModelSpec, Workload
    from tgauge import validate

    held: list[weakref.ref] = []

    class Tensor:  # stands for the failed point's activations
        pass

    def runner_that_runs_out(spec, workload, est, point, device, fvcore):
        activations = [Tensor() for _ in range(3)]
        held.extend(weakref.ref(t) for t in activations)
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 6840000000 bytes. Error code 12"
        )

    monkeypatch.setattr(validate, "_prefill", runner_that_runs_out)
    gc.disable()  # only validate_point's own collection may free the cycle
    try:
        point = validate.validate_point(ModelSpec(**TINY), Workload(mode="prefill", seq_len=8))
        assert point.status == "did_not_fit" and "out of memory on cpu" in point.notes[0]
        assert all(ref() is None for ref in held)
    finally:
        gc.enable()


# ---- 4. accepted and silently ignored ------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--window", "64"], "window=64 is invalid: it applies only with"),
        (["--pattern", "full", "--window", "64"], "attention_pattern='full' would ignore it"),
        (["--mode", "prefill", "--optimizer", "sgd"], "--optimizer applies to --mode train"),
        (["--mode", "decode", "--checkpointing", "full"], "--checkpointing applies to"),
        (["--mode", "decode", "--master-weights", "--dtype", "bf16"], "--master-weights"),
        (["--mode", "prefill", "--dropout", "0.1"], "--dropout applies to --mode train"),
        (["--no-kv-cache"], "--no-kv-cache applies to --mode prefill or decode only"),
        (["--kv-cache-dtype", "int8"], "--kv-cache-dtype applies to"),
        (["--new-tokens", "4"], "--new-tokens applies to --mode decode only"),
        (["--mode", "prefill", "--prompt-len", "5000"], "--prompt-len applies to --mode decode"),
        (["--mode", "decode", "--prompt-len", "5000"], "max_seq_len=1024"),
    ],
)
def test_option_the_mode_would_ignore_is_an_error(argv, fragment):
    one_error(["estimate", "gpt2-small", "-s", "64", *argv], fragment)


def test_fit_tokens_in_decode_is_an_error():
    one_error(["fit", "gpt2-small", "--mode", "decode", "-s", "64", "--tokens", "1000"],
              "--tokens times training; --mode decode would ignore it")  # fmt: skip


def test_fit_zero_on_one_gpu_prints_a_note():
    r = runner.invoke(app, ["fit", "gpt2-small", "-s", "64", "--zero", "3", "--gpus", "1"])
    assert r.exit_code == 0, r.output
    assert r.stderr.startswith("note: --zero 3 with one data-parallel GPU shards nothing")


def test_validate_sweep_of_one_field_twice_is_rejected(tmp_path):
    spec = write(tmp_path / "tiny.json", TINY)
    one_error(["validate", spec, "--sweep", "seq_len=16", "--sweep", "seq_len=32"],
              "each field may be swept once")  # fmt: skip


def test_spec_with_n_layers_and_n_decoder_layers_is_a_conflict(tmp_path):
    spec = write(tmp_path / "s.json", TINY | {"n_decoder_layers": 5})
    one_error(["estimate", spec], "n_layers=2 conflicts with n_decoder_layers=5")


def test_sweep_with_an_impossible_value_exits_2_up_front(tmp_path):
    line = one_error(["sweep", "gpt2-small", "--vary", "mode=train,bogus", "--out",
                      str(tmp_path)], "vary mode='bogus' is invalid")  # fmt: skip
    assert "'train', 'prefill' or 'decode'" in line and not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("config", "argv", "fragment"),
    [
        (GPT2, ["-s", "4096"], "max_seq_len=128"),
        ({k: v for k, v in GPT2.items() if k != "n_layer"}, ["-s", "16"], "'n_layer' is missing"),
        ({"model_type": "bert", "num_hidden_layers": 2, "hidden_size": 64, "vocab_size": 100,
          "num_attention_heads": 4, "intermediate_size": 128, "max_position_embeddings": 128},
         ["-s", "16", "--mode", "decode"], "decode needs a decoder"),
    ],
)  # fmt: skip
def test_profile_on_an_hf_config_checks_what_estimate_checks(tmp_path, config, argv, fragment):
    one_error(["profile", write(tmp_path / "config.json", config), *argv], fragment)


def test_an_option_for_one_mode_is_allowed_when_the_mode_itself_is_swept():
    argv = ["sweep", "gpt2-small", "-s", "64", "--mode", "decode", "--new-tokens", "4",
            "--vary", "mode=prefill,decode", "--json"]  # fmt: skip
    r = runner.invoke(app, argv)
    assert r.exit_code == 0, r.output
    assert [p["mode"] for p in json.loads(r.stdout)] == ["prefill", "decode"]


def test_a_forward_that_fails_while_saves_are_measured_frees_its_tensors():
    # profiler.saved's pack hook: returning the tensor itself made a tensor -> grad_fn ->
    # saved-tensor cycle through C++; a failed forward (out of memory) never ran the backward
    # that breaks it, so every tensor of the point stayed alive and the next point failed too
    import gc
    import weakref

    import torch

    from profiler.saved import measure_saved

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8))
    refs: list[weakref.ref] = []

    def run() -> None:
        hidden = torch.tanh(model[0](torch.randn(4, 8)))  # tanh saves its own output
        refs.append(weakref.ref(hidden))
        model[2](hidden)
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory")

    with pytest.raises(RuntimeError):
        measure_saved(model, run)
    gc.collect()
    assert refs[0]() is None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/prlimit").exists(), reason="needs prlimit")
def test_cpu_oom_point_does_not_sink_the_next_point(tmp_path):
    # the command: b=16 does not fit in 7 GB of address space, b=1 alone does
    r = subprocess.run(
        ["prlimit", "--as=7000000000", sys.executable, "-m", "tgauge.cli", "validate",
         "gpt2-small", "-s", "256", "--sweep", "batch_size=16,1", "--out", str(tmp_path)],
        cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=1200,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    records = [json.loads(x) for x in (tmp_path / "validation.jsonl").read_text().splitlines()]
    assert [(x["workload"]["batch_size"], x["status"]) for x in records] == [
        (16, "did_not_fit"),
        (1, "ok"),
    ]
