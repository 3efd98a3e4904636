"""The typer app, its error boundary and console helpers shared by every command."""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from typer.core import TyperGroup


class _OneLineUsageErrors(TyperGroup):
    """Usage errors (bad option value, unknown option, missing argument) as one red line."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except typer.TyperException as exc:
            # click's UsageError family (vendored by typer); NoArgsIsHelpError shows help
            if type(exc).__name__ == "NoArgsIsHelpError" or not hasattr(exc, "format_message"):
                raise
            where = getattr(getattr(exc, "ctx", None), "command_path", None) or ctx.command_path
            fail(f"{exc.format_message()} (see '{where} --help')")

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _plain_help(command, ctx)
        return command


def _plain_help(command: Any, ctx: Any) -> None:
    """Help as a reader expects it (issue 23): a flag shows no ``<bool>`` type (typer's
    TyperOption.display_type_rich prints one unless a metavar is set), and an argument reads
    MODEL in the usage line, not typer's ``{model}`` (TyperArgument._usage_display_name)."""
    help_option = command.get_help_option(ctx)
    for param in [*command.params, *([help_option] if help_option else [])]:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        elif param.param_type_name == "argument":
            name = (param.metavar or param.name).upper()
            param.metavar = name
            shown = name if param.required else f"[{name}]"
            param.get_usage_pieces = lambda ctx, shown=shown: [shown]


app = typer.Typer(
    cls=_OneLineUsageErrors,
    name="tgauge",
    help="Size a Transformer before you rent a GPU, then prove it by measuring.",
    no_args_is_help=False,  # `tgauge` alone prints the help and exits 0 (_root)
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output (no terminal, no COLUMNS) gets 120 columns rather than rich's 80, so wide
# tables stay readable in logs and files.
_TTY = sys.stdout is not None and sys.stdout.isatty()  # None: started with stdout closed
_PIPED_WIDTH = None if _TTY or "COLUMNS" in os.environ else 120
console = Console(width=_PIPED_WIDTH)
err_console = Console(stderr=True)


def print_table(table: Any) -> None:
    """``table`` on stdout; a caption wider than the table is printed below it as one
    paragraph (rich would wrap it to the table's width, mid-phrase)."""
    from rich.text import Text

    caption = table.caption
    if isinstance(caption, str) and caption:
        width = console.measure(table).maximum
        if len(Text.from_markup(caption).plain) > width:
            table.caption = None
            console.print(table)
            console.print(Text.from_markup(caption, style="dim"), highlight=False)
            return
    console.print(table)


def _print_version(value: bool) -> None:
    if value:
        from tgauge import __version__

        console.print(f"tgauge {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Size a Transformer before you rent a GPU, then prove it by measuring."""
    if ctx.invoked_subcommand is None:  # `tgauge` alone: the help, and success
        _plain_help(ctx.command, ctx)
        console.print(ctx.get_help(), highlight=False, markup=False)
        raise typer.Exit(0)


F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """Bad input found by the application (unknown preset, unreadable file, ...)."""


# module -> the extra of pyproject.toml that installs it
EXTRAS = {"torch": "profile", "transformers": "hf", "matplotlib": "report", "peft": "finetune"}


def require(module: str, needed_by: str) -> None:
    """UserError naming the extra to install when ``module`` cannot be imported."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise UserError(
            f"{needed_by} needs {module} ({exc}): pip install 'tgauge[{EXTRAS[module]}]'"
        ) from None


def one_line(text: str) -> str:
    """``text`` with control characters (newlines, U+001C, ...) escaped: user text such as a
    key in a file cannot split a message over lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def fail(message: str, code: int = 2) -> NoReturn:
    """One red line on stderr, exit code 2. The message is printed literally: user text such
    as ``foo[/]bar`` is not read as Rich markup."""
    from rich.text import Text

    line = Text.assemble(("error:", "bold red"), " ", one_line(message))
    err_console.print(line, highlight=False, soft_wrap=True)
    raise typer.Exit(code=code)


def note(message: str) -> None:
    """One yellow line on stderr for a default that applied or an option with no effect."""
    from rich.text import Text

    err_console.print(
        Text.assemble(("note:", "yellow"), " ", one_line(message)), highlight=False, soft_wrap=True
    )


def describe_error(exc: BaseException) -> str:
    """A one-line message for a user error: pydantic errors name the field and value."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown field {loc!r}"
            elif loc and not msg.startswith(loc):
                from estimator.spec.files import short_repr

                value = err.get("input")
                shown = (
                    f"={short_repr(value)}" if isinstance(value, (str, int, float, bool)) else ""
                )
                msg = f"{loc}{shown}: {msg}"
            parts.append(msg)
        return "; ".join(parts)
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


#: what the running command holds until it ends, however it ends (at_command_end)
_AT_COMMAND_END: list[Callable[[], None]] = []


def at_command_end(release: Callable[[], None]) -> None:
    """Call ``release`` when the running command ends (returns, fails or is interrupted)."""
    _AT_COMMAND_END.append(release)


def user_errors(func: F) -> F:
    """Turn the library's input errors into `fail` (never a traceback)."""
    from pydantic import ValidationError

    from estimator.spec import SpecError

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (SpecError, ValidationError, UserError, OSError, ValueError) as exc:
            if isinstance(exc, BrokenPipeError):
                raise  # `tgauge ... | head`: typer exits quietly
            fail(describe_error(exc))
        finally:
            while _AT_COMMAND_END:  # e.g. the lock of an output folder (tgauge/safeio.py)
                _AT_COMMAND_END.pop()()

    return wrapper  # type: ignore[return-value]


def out_dir(path: Path, option: str = "--out") -> Path:
    """``path`` as an existing, writable folder (created if absent); UserError otherwise."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{option}={str(path)!r} is a file; give a folder") from None
    except OSError as exc:
        raise UserError(f"{option}={str(path)!r} cannot be created: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{option}={str(path)!r} is not writable") from None
    return path


def progress_display() -> Any:
    """A rich Progress on stderr (spinner, what runs, bar, count, elapsed time), drawn only on
    a terminal and erased when done: stdout (tables, --json) stays clean."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,  # rich would still print a newline to a pipe
    )


def print_json(payload: Any) -> None:
    """JSON on stdout: a pydantic model, or plain data."""
    if hasattr(payload, "model_dump_json"):
        sys.stdout.write(payload.model_dump_json(indent=2) + "\n")
    else:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
