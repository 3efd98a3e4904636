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


def write_report(report: Report, out_dir: Path) -> ReportFiles:
    """Render every chart to out_dir/charts/, then write report.md and report.html: all in a
    staging folder first, renamed into ``out_dir`` only once every file is written (a full
    disk leaves the previous report as it was); UserError naming the folder otherwise."""
    import shutil
    import tempfile

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out_dir))
    try:  # every file is made in a staging folder, then all are renamed into place
        files = _write_report(report, staging)
        return _move_into(files, staging, out_dir)
    except OSError as exc:
        from tgauge.app import UserError

        where = exc.filename or staging
        raise UserError(
            f"cannot write the report into {out_dir} ({where}): {exc.strerror or exc}; "
            "no report file was written"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into(files: ReportFiles, staging: Path, out_dir: Path) -> ReportFiles:
    """Rename the staged files to the same names under ``out_dir`` (signals held meanwhile)."""
    from tgauge.safeio import _signals_held

    def target(p: Path) -> Path:
        return out_dir / p.relative_to(staging)

    (out_dir / "charts").mkdir(exist_ok=True)
    with _signals_held():
        for path in [*files.charts, files.markdown, files.html]:
            os.replace(path, target(path))
    return ReportFiles(
        markdown=target(files.markdown),
        html=target(files.html),
        charts=[target(p) for p in files.charts],
    )


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
