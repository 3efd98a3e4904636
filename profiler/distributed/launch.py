"""Start N ranks on this machine, watch them, and stop them all if one fails.

Each rank is ``python -m profiler.distributed.worker JOB.json`` in its own session (process
group), with RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT (a free TCP port on 127.0.0.1)
set, its output in ``rank<r>.log``. The launcher polls: a rank that exits non-zero or is
killed by a signal ends the run: every other rank's process group gets SIGTERM, then SIGKILL,
and ``RankFailure`` names the rank, its exit code or signal and the last lines of its log.
A run past ``timeout_s`` ends the same way, naming the ranks still running and where each
was. No process outlives ``run_ranks``, whatever ends it: an exception or KeyboardInterrupt
stops the ranks on the way out; SIGTERM to the launcher is turned into a RankFailure (while
``run_ranks`` runs in the main thread); and on Linux every rank asks the kernel for SIGKILL
when the launcher dies (``prctl(PR_SET_PDEATHSIG)``), so even ``kill -9`` of the launcher
leaves no rank behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from profiler.distributed.results import Job, RankProfile

POLL_S = 0.05
GRACE_S = 3.0


class RankFailure(RuntimeError):
    """A rank failed (or the run timed out); ``rank`` is the first rank that failed."""

    def __init__(self, message: str, rank: int | None) -> None:
        super().__init__(message)
        self.rank = rank


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _how(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


def _tail(path: Path, n_lines: int = 8) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n_lines:])


def _read_phase(out_dir: Path, rank: int) -> str:
    try:
        return Path(out_dir, f"rank{rank}.phase").read_text()
    except OSError:
        return "starting"


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM every live rank's process group, then SIGKILL what is left; reap all."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            time.sleep(POLL_S)
    for proc in procs:
        proc.wait()


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL me when my parent dies (Linux prctl)."""
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises RankFailure here (main thread only: signal handlers live there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise RankFailure("stopped by SIGTERM: every rank was stopped", None)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _env(rank: int, world: int, port: int) -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the checkout holding profiler/
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env |= {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
        "CUDA_VISIBLE_DEVICES": "",  # gloo on CPU: the ranks never touch an accelerator
    }
    return env


def run_ranks(
    job: Job,
    *,
    timeout_s: float = 300.0,
    on_start: Callable[[list[int]], None] | None = None,
    on_phase: Callable[[dict[int, str]], None] | None = None,
) -> list[RankProfile]:
    """Run ``job`` on ``job.parallel.world`` ranks; their profiles, in rank order.

    ``on_start(pids)`` is called once every rank has started; ``on_phase({rank: phase})``
    whenever a rank moves on. Raises RankFailure (see the module docstring)."""
    out_dir = Path(job.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    job_file = out_dir / "job.json"
    job_file.write_text(job.model_dump_json())
    world, port = job.parallel.world, free_port()
    procs: list[subprocess.Popen] = []
    preexec = _die_with_parent if sys.platform == "linux" else None
    with _sigterm_raises():
        try:
            _start(procs, job_file, out_dir, world, port, preexec)
            if on_start is not None:
                on_start([p.pid for p in procs])
            _watch(procs, out_dir, timeout_s, on_phase)
        finally:
            _stop(procs)
    return [
        RankProfile.model_validate_json((out_dir / f"rank{r}.json").read_text())
        for r in range(world)
    ]


def _start(
    procs: list[subprocess.Popen],
    job_file: Path,
    out_dir: Path,
    world: int,
    port: int,
    preexec: Callable[[], None] | None,
) -> None:
    """Start the ranks, appending each to ``procs`` as it starts (so a failure part way
    still stops the ones started)."""
    for rank in range(world):
        log = open(out_dir / f"rank{rank}.log", "wb")  # noqa: SIM115 (the child owns it)
        try:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "profiler.distributed.worker", str(job_file)],
                    env=_env(rank, world, port),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=preexec,  # noqa: PLW1509 (prctl only: no locks taken)
                )
            )
        finally:
            log.close()


def _watch(
    procs: list[subprocess.Popen],
    out_dir: Path,
    timeout_s: float,
    on_phase: Callable[[dict[int, str]], None] | None,
) -> None:
    deadline = time.monotonic() + timeout_s
    phases: dict[int, str] = {}
    while True:
        codes = [p.poll() for p in procs]
        failed = [r for r, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            rank = failed[0]
            log = out_dir / f"rank{rank}.log"
            tail = _tail(log)
            others = f"; also failed: ranks {failed[1:]}" if failed[1:] else ""
            raise RankFailure(
                f"rank {rank} {_how(codes[rank])}{others} (log: {log})"
                + (f"\n{tail}" if tail else ""),
                rank,
            )
        if all(code == 0 for code in codes):
            return
        now = {r: _read_phase(out_dir, r) for r in range(len(procs))}
        if now != phases:
            phases = now
            if on_phase is not None:
                on_phase(dict(now))
        if time.monotonic() > deadline:
            running = [r for r, code in enumerate(codes) if code is None]
            where = ", ".join(f"rank {r} in {phases.get(r, 'starting')!r}" for r in running)
            raise RankFailure(f"timed out after {timeout_s:.0f} s: {where}", running[0])
        time.sleep(POLL_S)
