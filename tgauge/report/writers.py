"""Write a report as Markdown (charts as files beside it) and as one self-contained HTML page
(charts inlined as SVG), so it can be sent to a colleague as a single file."""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from tgauge.report.chartdata import ChartData


class Table(BaseModel):
    model_config = ConfigDict(frozen=True)

    columns: list[str]
    rows: list[list[str]]


class Section(BaseModel):
    model_config = ConfigDict(frozen=True)

    heading: str
    paragraphs: list[str] = []
    tables: list[Table] = []
    charts: list[ChartData] = []


class Report(BaseModel):
    model_config = ConfigDict(frozen=True)

    title: str
    sections: list[Section]

    @property
    def charts(self) -> list[ChartData]:
        return [c for s in self.sections for c in s.charts]


class ReportFiles(BaseModel):
    markdown: Path
    html: Path
    charts: list[Path]


def _md_table(t: Table) -> str:
    head = "| " + " | ".join(t.columns) + " |"
    rule = "|" + "|".join("---" for _ in t.columns) + "|"
    body = ["| " + " | ".join(row) + " |" for row in t.rows]
    return "\n".join([head, rule, *body])


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in t.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _inline_svg(path: Path) -> str:
    """The <svg> element of a file, without its XML prolog and doctype."""
    text = path.read_text()
    return text[text.index("<svg") :]


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
    "color:#222}table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;"
    "padding:.25rem .6rem;text-align:right}th{background:#f3f3f3}td:first-child,"
    "th:first-child{text-align:left}figure{margin:1rem 0}svg{max-width:100%;height:auto}"
)


#: the names a report shows in its folder: each a symlink into ``.report``, itself a symlink
#: to the folder holding one whole report (``.report-XXXX``)
ENTRIES = ("report.md", "report.html", "charts")
LIVE = ".report"


def write_report(report: Report, out_dir: Path) -> ReportFiles:
    """Render every chart to charts/, then write report.md and report.html: all in a staging
    folder ``.report-XXXX`` first, fsync'ed, then made the live report in ONE rename: the
    symlink ``.report`` flipped to it (report.md, report.html and charts are symlinks through
    ``.report``). A full disk or a kill at any moment leaves the previous report whole, the
    new one whole, never a mix; a killed run's staging folder is removed by the next run
    (tgauge/safeio.py remove_leftovers). UserError naming the folder otherwise."""
    import shutil
    import tempfile

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out_dir))
    try:  # every file is made in a staging folder, then one rename makes it the report
        files = _write_report(report, staging)
        _sync_tree(staging)
        return _flip(files, staging, out_dir)
    except OSError as exc:
        from tgauge.app import UserError

        where = exc.filename or staging
        raise UserError(
            f"cannot write the report into {out_dir} ({where}): {exc.strerror or exc}; "
            "no report file was written"
        ) from None
    finally:  # the staging folder is removed unless it became the report (a signal may
        # arrive at any moment, the flip's own rename included)
        if live_report(out_dir) != staging.name:
            shutil.rmtree(staging, ignore_errors=True)


def live_report(out_dir: Path) -> str | None:
    """The name of the folder holding the report of ``out_dir`` (None: no report yet)."""
    try:
        return os.readlink(out_dir / LIVE)
    except OSError:
        return None


def _sync_tree(folder: Path) -> None:
    """fsync every file and folder under ``folder`` (its contents are on disk before the flip)."""
    for path in sorted(folder.rglob("*"), key=lambda p: -len(p.parts)) + [folder]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _symlink_over(target: str, path: Path) -> None:
    """``path`` made a symlink to ``target`` by one rename (a temporary link beside it)."""
    import uuid

    temp = path.parent / f".report.{uuid.uuid4().hex[:8]}.tmp"
    os.symlink(target, temp)
    try:
        os.replace(temp, path)
    except OSError:
        os.unlink(temp)
        raise


def _flip(files: ReportFiles, staging: Path, out_dir: Path) -> ReportFiles:
    """Make ``staging`` the live report in one rename (signals held meanwhile)."""
    import shutil

    from tgauge.safeio import _signals_held

    link = out_dir / LIVE
    previous = os.readlink(link) if link.is_symlink() else None
    first = previous is None
    with _signals_held():
        # a fresh folder: the entries exist (dangling) before the flip makes them appear
        for name in ENTRIES if first else ():
            entry = out_dir / name
            if not entry.exists() and not entry.is_symlink():
                os.symlink(f"{LIVE}/{name}", entry)
        _symlink_over(staging.name, link)  # the one rename: the whole new report appears
        for name in ENTRIES:  # files of an older tgauge (real files) become entries once
            entry = out_dir / name
            if entry.is_symlink() and os.readlink(entry) == f"{LIVE}/{name}":
                continue
            if entry.is_dir() and not entry.is_symlink():
                aside = Path(tempfile_name(out_dir))
                os.replace(entry, aside)  # a later run's remove_leftovers would do it too
                shutil.rmtree(aside, ignore_errors=True)
            _symlink_over(f"{LIVE}/{name}", entry)
        _sync_dir(out_dir)
    if previous is not None and previous != staging.name and previous.startswith(".report-"):
        shutil.rmtree(out_dir / previous, ignore_errors=True)  # else: the next run removes it

    def target(p: Path) -> Path:
        return out_dir / p.relative_to(staging)

    return ReportFiles(
        markdown=target(files.markdown),
        html=target(files.html),
        charts=[target(p) for p in files.charts],
    )


def tempfile_name(folder: Path) -> str:
    """A free name ``.report-XXXX`` in ``folder`` (the pattern remove_leftovers removes)."""
    import uuid

    return str(folder / f".report-old-{uuid.uuid4().hex[:8]}")


def _sync_dir(folder: Path) -> None:
    import contextlib

    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_report(report: Report, out_dir: Path) -> ReportFiles:
    from tgauge.report.charts import render

    chart_dir = out_dir / "charts"
    rendered = {c.name: render(c, chart_dir) for c in report.charts}
    md = [f"# {report.title}", ""]
    body = [f"<h1>{html.escape(report.title)}</h1>"]
    for s in report.sections:
        md += [f"## {s.heading}", ""]
        body.append(f"<h2>{html.escape(s.heading)}</h2>")
        for p in s.paragraphs:
            md += [p, ""]
            body.append(f"<p>{html.escape(p)}</p>")
        for t in s.tables:
            md += [_md_table(t), ""]
            body.append(_html_table(t))
        for c in s.charts:
            paths = rendered[c.name]
            md += [f"![{c.title}](charts/{paths['svg'].name})", ""]
            anchor = re.sub(r"[^A-Za-z0-9_-]", "_", c.name)
            body.append(
                f'<figure id="chart-{anchor}">{_inline_svg(paths["svg"])}'
                f"<figcaption>{html.escape(c.title)}</figcaption></figure>"
            )
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    md_path.write_text("\n".join(md))
    html_path.write_text(
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(report.title)}'
        f"</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
    charts = [p for paths in rendered.values() for p in paths.values()]
    return ReportFiles(markdown=md_path, html=html_path, charts=charts)
