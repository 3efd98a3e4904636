"""Entry point of the `tgauge` command: registers each command module on the app."""

from __future__ import annotations

from tgauge.app import app
from tgauge.commands import compare as _compare  # noqa: F401, E402

# Each module registers its commands on `app` at import; none imports torch at import time.
from tgauge.commands import estimate as _estimate  # noqa: F401, E402
from tgauge.commands import fit as _fit  # noqa: F401, E402
from tgauge.commands import presets as _presets  # noqa: F401, E402
from tgauge.commands import profile as _profile  # noqa: F401, E402
from tgauge.commands import report as _report  # noqa: F401, E402
from tgauge.commands import sweep as _sweep  # noqa: F401, E402
from tgauge.commands import validate as _validate  # noqa: F401, E402


def _reopen_closed_streams() -> None:
    """Started with stdout or stderr closed (``tgauge presets >&-``): point the free file
    descriptor at /dev/null, so output is dropped rather than crashing, and a file the command
    opens later can never take descriptor 1 or 2 and receive the tables."""
    import os
    import sys

    for fd, name in ((1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is None:
            try:
                os.fstat(fd)
            except OSError:
                os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
            setattr(sys, name, open(fd, "w", closefd=False))  # noqa: SIM115


def main() -> None:
    import sys

    import typer

    from tgauge.safeio import raise_on_signals, stop_on_signals

    raise_on_signals()  # SIGINT / SIGTERM at any moment: one line, exit 130 / 143 (issue 24)
    _reopen_closed_streams()
    try:
        with stop_on_signals(lambda: "stopped before the command finished"):
            app()
    except typer.Exit as exc:  # raised by stop_on_signals outside the app
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
