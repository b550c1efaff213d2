"""The report of a run directory: plots, one self-contained HTML page, and CSV/JSON exports of a run.

Every input file is read and checked before anything is written, so a bad run directory leaves no half report.
"""

from __future__ import annotations

from pathlib import Path

from fedlearn.report.export import report_data, write_institutions_csv, write_json, write_rounds_csv
from fedlearn.report.load import ReportError, RunReport, load_run
from fedlearn.report.page import render_page
from fedlearn.report.plots import require_matplotlib, write_plots

__all__ = ["ReportError", "RunReport", "build_report", "load_run"]

REPORT_DIR = "report"
HTML_FILE = "index.html"


def build_report(run_dir: Path, out_dir: Path | None = None) -> Path:
    """Write the report of ``run_dir`` into ``out_dir`` (default ``run_dir/report``); returns the HTML path."""
    report = load_run(Path(run_dir))
    require_matplotlib()
    out = Path(out_dir) if out_dir is not None else report.run_dir / REPORT_DIR
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ReportError(f"report directory {out} is a file") from None
    except OSError as exc:
        raise ReportError(f"report directory {out} cannot be created: {exc.strerror}") from None
    try:
        plots = write_plots(report, out)
        exports = [out / "rounds.csv", out / "institutions.csv", out / "report.json"]
        write_rounds_csv(report, exports[0])
        write_institutions_csv(report, exports[1])
        write_json(report_data(report, plots), exports[2])
        html = out / HTML_FILE
        # The page goes last: its presence means the rest of the report is complete.
        tmp = html.with_suffix(".html.tmp")
        tmp.write_text(render_page(report, plots, exports), encoding="utf-8")
        tmp.replace(html)
    except OSError as exc:
        raise ReportError(f"cannot write the report in {out}: {exc.strerror or exc}") from None
    return html
