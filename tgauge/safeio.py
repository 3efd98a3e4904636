"""Writing results so that nothing is lost or half-written, and stopping cleanly on a signal.

- ``write_files``: every file is first written in full to a temporary file in its own folder
  and fsync'ed; only when all of them are written are they renamed over their targets (with
  SIGINT / SIGTERM held back during the renames). A full disk or a kill leaves the previous
  files as they were, and no temporary file behind.
- ``append_line``: one record appended as one whole line, with a single ``write`` on an
  O_APPEND descriptor (concurrent runs interleave whole lines, never bytes). A partial last
  line left by an earlier crash is cut off first, and said so; a short write is undone.
- ``stop_on_signals``: SIGINT / SIGTERM end a loop with one line saying what was kept and
  exit code 130 / 143.
Errors are UserError naming the file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import typer

from tgauge.app import UserError, at_command_end, err_console, one_line

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _write(fd: int, data: bytes | memoryview) -> int:
    """``os.write``: the one place bytes reach a file (tests put a full disk here)."""
    return os.write(fd, data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[_write(fd, view) :]


def file_mode() -> int:
    """The mode ``open()`` gives a new file here (0o666 less the umask, 0o644 by default):
    the mode of every output, temporaries renamed into place included (mkstemp's are 0600)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    umask = os.umask(0o022)  # no /proc: read it by setting it (and put it back)
    os.umask(umask)
    return 0o666 & ~umask


def _new_temp(path: Path) -> tuple[int, str]:
    """A new temporary file beside ``path`` (``.<name>.<random>.tmp``), of file_mode()."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
    except OSError:
        pass
    return fd, name


def _write_temp(path: Path, data: bytes) -> Path:
    """``data`` in a new temporary file beside ``path``, on disk (fsync) before returning."""
    fd, name = _new_temp(path)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(name)
        raise
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT / SIGTERM wait until the block is done (then they are delivered)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def write_files(files: dict[Path, str | bytes]) -> None:
    """Write every file or none: temporaries first, then renames; UserError naming the file."""
    temps: dict[Path, Path] = {}
    try:
        for path, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            try:
                temps[path] = _write_temp(path, data)
            except OSError as exc:
                raise UserError(
                    f"cannot write {path}: {exc.strerror or exc}; nothing was written "
                    "(files already there are unchanged)"
                ) from None
        with _signals_held():
            for path, temp in temps.items():
                os.replace(temp, path)
            temps.clear()
            with contextlib.suppress(OSError):  # make the renames durable
                for folder in {p.parent for p in files}:
                    dfd = os.open(folder, os.O_RDONLY)
                    try:
                        os.fsync(dfd)
                    finally:
                        os.close(dfd)
    finally:
        for temp in temps.values():
            with contextlib.suppress(OSError):
                os.unlink(temp)


class StagedFile:
    """A file written piece by piece into a temporary beside its target (staged_files)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd, self.temp = _new_temp(path)

    def write(self, text: str) -> None:
        try:
            _write_all(self.fd, text.encode())
        except OSError as exc:
            raise UserError(
                f"cannot write {self.path}: {exc.strerror or exc}; nothing was written "
                "(files already there are unchanged)"
            ) from None


@contextlib.contextmanager
def staged_files(paths: list[Path]) -> Iterator[list[StagedFile]]:
    """Files written as their content is made (streamed, memory bounded), all made visible
    together at the end: each goes to a temporary beside its target; when the block ends
    normally they are fsync'ed and renamed over their targets (signals held meanwhile). A
    failure, a signal or a full disk removes the temporaries and leaves the targets as they
    were; a SIGKILL leaves temporaries that the next run in the folder removes
    (hold_folder)."""
    staged: list[StagedFile] = []
    try:
        for path in paths:
            staged.append(StagedFile(path))
        yield staged
        for f in staged:
            try:
                os.fsync(f.fd)
            except OSError as exc:
                raise UserError(f"cannot write {f.path}: {exc.strerror or exc}") from None
        with _signals_held():
            for f in staged:
                os.replace(f.temp, f.path)
            staged_done = list(staged)
            staged.clear()
            for folder in {f.path.parent for f in staged_done}:
                with contextlib.suppress(OSError):
                    dfd = os.open(folder, os.O_RDONLY)
                    try:
                        os.fsync(dfd)
                    finally:
                        os.close(dfd)
            for f in staged_done:
                os.close(f.fd)
    finally:
        for f in staged:
            with contextlib.suppress(OSError):
                os.close(f.fd)
            with contextlib.suppress(OSError):
                os.unlink(f.temp)


def append_line(path: Path, line: str) -> str | None:
    """Append ``line`` (no newline in it) plus a newline in one write. Returns a note when a
    partial last line of an earlier, interrupted run was cut off first."""
    data = (line + "\n").encode()
    note = None
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None
    try:
        size = os.fstat(fd).st_size
        if size:
            tail = os.pread(fd, 1, size - 1) if hasattr(os, "pread") else b"\n"
            if tail != b"\n":  # an earlier run was cut off mid-line: drop that fragment
                keep = _last_newline_end(path, size)
                os.ftruncate(fd, keep)
                note = (
                    f"{path}: removed a partial last line ({size - keep:,} bytes) "
                    "left by an interrupted run"
                )
                size = keep
        try:
            written = _write(fd, data)
        except OSError as exc:
            os.ftruncate(fd, size)
            raise UserError(
                f"cannot write {path}: {exc.strerror}; the records already there are kept"
            ) from None
        if written != len(data):  # short write (disk full): leave no partial line
            os.ftruncate(fd, size)
            raise UserError(
                f"cannot write {path}: only {written} of {len(data)} bytes fit; "
                "the records already there are kept"
            )
    finally:
        os.close(fd)
    return note


def _last_newline_end(path: Path, size: int) -> int:
    """Offset just after the last newline of the first ``size`` bytes of ``path`` (0: none)."""
    with path.open("rb") as fh:
        pos = size
        while pos > 0:
            start = max(0, pos - 65536)
            fh.seek(start)
            block = fh.read(pos - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                return start + cut + 1
            pos = start
    return 0


class Interrupted(BaseException):
    """SIGTERM turned into an exception, so ``finally`` blocks run as for SIGINT.

    A BaseException, like KeyboardInterrupt: code that records a failure as data (``except
    Exception`` in tgauge/validate.py's validate_point) must not swallow a request to stop.
    ``signum``: the signal (SIGINT too, where raise_on_signals installed the handler)."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__()
        self.signum = signum


def _raise(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def raise_on_signals() -> None:
    """From now on SIGINT and SIGTERM raise Interrupted (the `tgauge` process installs this
    first thing, so a signal at any moment of a command ends it through stop_on_signals)."""
    for signum in _SIGNALS:
        signal.signal(signum, _raise)


@contextlib.contextmanager
def stop_on_signals(kept: Callable[[], str]) -> Iterator[None]:
    """Run the block; on SIGINT (exit 130) or SIGTERM (exit 143) print one line,
    ``interrupted: <kept()>``, instead of a traceback."""

    try:
        previous = signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main thread: leave SIGTERM alone
        previous = None
    try:
        yield
    except (KeyboardInterrupt, Interrupted) as exc:
        from rich.text import Text

        sigint = isinstance(exc, KeyboardInterrupt) or exc.signum == signal.SIGINT
        code = 130 if sigint else 143
        line = Text.assemble(("interrupted:", "bold red"), " ", one_line(kept()))
        # soft_wrap: one line whatever the width (a pipe or a log gets no wrapped path)
        err_console.print(line, highlight=False, soft_wrap=True)
        raise typer.Exit(code=code) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


# ---- one writer per output folder, and the leftovers of a killed run ---------------------

#: what a run killed mid-write leaves in its folder: staging folders of `report`, temporary
#: files of write_files / the sweep's stream (``.<name>.<random>.tmp``), the half-made symlink
#: of the report's flip (``.report.<random>.tmp``). Nothing else in the folder is touched.
LEFTOVERS = (
    ".report-*",
    ".report.*.tmp",
    ".sweep.csv.*.tmp",
    ".sweep.json.*.tmp",
    ".validation.jsonl.*.tmp",
)


def _lock_holder(fd: int) -> str:
    """' (pid N)' of the process holding a flock on the file of ``fd`` (Linux /proc/locks)."""
    info = os.fstat(fd)
    inode = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            parts = line.split()
            if len(parts) > 5 and parts[1] == "FLOCK" and parts[5] == inode:
                return f" (pid {parts[4]})"
    return ""


def hold_folder(folder: Path, option: str = "--out") -> None:
    """Make this run the one writer of ``folder`` until the command ends, then remove what
    killed runs left there (LEFTOVERS).

    The lock is ``flock(LOCK_EX)`` on the folder itself: no lock file, and the kernel releases
    it when the process dies however it dies (SIGKILL, OOM killer), so it is never stale. A
    second run into the folder is refused with one line (UserError). The lock is released when
    the command ends (tgauge/app.py at_command_end: tests run commands in one process)."""
    import fcntl

    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _lock_holder(fd)
        os.close(fd)
        raise UserError(
            f"{option}={str(folder)!r} is in use by another tgauge run{holder}: one run writes "
            "into a folder at a time; wait for it to end or give another folder"
        ) from None
    except OSError:  # a filesystem without flock: run unlocked rather than refuse
        os.close(fd)
        return
    at_command_end(lambda: os.close(fd))  # closing the descriptor releases the lock
    remove_leftovers(folder)


def remove_leftovers(folder: Path) -> list[str]:
    """Remove the LEFTOVERS of killed runs from ``folder`` (call it holding the folder): the
    report's live data folder (the target of ``.report``) is kept. Returns the names removed."""
    import shutil

    live = None
    with contextlib.suppress(OSError):
        live = os.readlink(folder / ".report")
    removed = []
    for pattern in LEFTOVERS:
        for path in folder.glob(pattern):
            if path.name == live:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
            removed.append(path.name)
    return removed
