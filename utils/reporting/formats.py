"""The result table as text: Markdown, CSV and LaTeX, and the list of runs left out.

Everything here formats what :mod:`utils.reporting.tables` computed; record
text (labels, run ids, errors) is escaped for each format, so a ``|``, a
brace or a line break in a model name cannot break a table or forge a line.
"""

from __future__ import annotations

import csv
import io
import math

from utils.reporting.runs import RunSet
from utils.reporting.tables import DEFAULT_METRICS, METRICS, Published, Row, published_columns

__all__ = ["format_notes", "format_others", "format_table", "one_line"]

_DASH = "–"


def _cell(mean: float, std: float, plus_minus: str) -> str:
    if math.isnan(mean):
        return _DASH
    digits = 2
    text = f"{mean:.{digits}f}"
    return text if math.isnan(std) else f"{text}{plus_minus}{std:.{digits}f}"


def _subset_text(subset: int | None) -> str:
    return "?" if subset is None else str(subset)


# One pass per character: replacing in sequence would escape the braces of \textbackslash{}.
_LATEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "–": "--", "\n": " ", "\r": " ",
}  # fmt: skip


def _latex_escape(text: str) -> str:
    return "".join(_LATEX.get(c, c) for c in text)


def _md_escape(text: str) -> str:
    """A Markdown table cell: a '|' would start a new column and a line break a new row."""
    return " ".join(text.replace("\\", "\\\\").replace("|", "\\|").split())


def one_line(text: str) -> str:
    """Record text (ids, names, errors) in a one-entry-per-line list: no line breaks."""
    return " ".join(str(text).split())


def format_table(rows: list[Row], *, metrics=DEFAULT_METRICS, fmt: str = "md", published: list[Published] = ()) -> str:
    """The table as Markdown, CSV or LaTeX.

    Markdown and LaTeX show ``mean ± std`` cells and cite the published
    sources as ``[k]`` under the table. CSV holds numbers: ``<metric>_mean``,
    ``<metric>_std`` and ``<metric>_pub_<source>`` columns, accuracies in percent.
    """
    pub_cols = published_columns(rows, metrics, list(published))
    ref = {pub.source: i for i, pub in enumerate(published, start=1)}
    used = [pub for pub in published if any(src == pub.source for src, _ in pub_cols)]
    if fmt == "csv":
        head = ["model", "label", "subset", "study", "n"]
        head += [f"{k}_{s}" for k in metrics for s in ("mean", "std")]
        head += [f"{k}_pub_{src}" for src, k in pub_cols] + ["params", "run_ids"]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(head)
        for r in rows:
            line = [r.model, r.label, "" if r.subset is None else r.subset, r.study or "", r.n]
            for k in metrics:
                line += [_num(r.mean.get(k)), _num(r.std.get(k))]
            line += [_num(r.published.get(src, {}).get(k)) for src, k in pub_cols]
            line += [_num(r.params), " ".join(r.run_ids)]
            w.writerow(line)
        return buf.getvalue()
    titles = (
        ["Model", "Subset", "n"] + [METRICS[k] for k in metrics] + [f"{METRICS[k]} [{ref[s]}]" for s, k in pub_cols]
    )

    def cells(r: Row, pm: str, escape=str) -> list[str]:
        out = [escape(r.label), _subset_text(r.subset), str(r.n)]
        out += [_cell(r.mean.get(k, math.nan), r.std.get(k, math.nan), pm) for k in metrics]
        out += [_cell(r.published.get(s, {}).get(k, math.nan), math.nan, pm) for s, k in pub_cols]
        return out

    notes = [one_line(f"[{ref[p.source]}] {p.citation}" + (f" Note: {p.note}" if p.note else "")) for p in used]
    if fmt == "md":
        lines = ["| " + " | ".join(titles) + " |", "|" + "|".join(["---"] + ["---:"] * (len(titles) - 1)) + "|"]
        lines += ["| " + " | ".join(cells(r, " ± ", _md_escape)) + " |" for r in rows]
        return "\n".join(lines + ([""] + notes if notes else [])) + "\n"
    if fmt == "tex":
        spec = "l" + "r" * (len(titles) - 1)
        lines = [
            f"\\begin{{tabular}}{{{spec}}}",
            r"\toprule",
            " & ".join(_latex_escape(t) for t in titles) + r" \\",
            r"\midrule",
        ]
        # Escape the labels only: the cells are numbers and our own $\pm$.
        lines += [" & ".join(cells(r, r" $\pm$ ", _latex_escape)).replace(_DASH, "--") + r" \\" for r in rows]
        lines.append(r"\bottomrule")
        lines += [f"\\multicolumn{{{len(titles)}}}{{l}}{{\\footnotesize {_latex_escape(n)}}} \\\\" for n in notes]
        lines.append(r"\end{tabular}")
        return "\n".join(lines) + "\n"
    raise ValueError(f"format expected md, csv or tex, received {fmt!r}")


def _num(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))


def format_notes(rows: list[Row]) -> str:
    """Warnings about rows that average runs with different settings, and the runs each ensemble fuses (empty when none)."""
    lines = [
        f"- {one_line(r.label)} ({_subset_text(r.subset)}) averages runs with different settings: "
        f"{one_line('; '.join(r.differs))}"
        for r in rows
        if r.differs
    ]
    lines += [
        f"- {one_line(r.label)} ({_subset_text(r.subset)}): {METRICS.get(k, k)} is the mean of {have} of its {r.n} runs "
        "(the other records predate that metric)"
        for r in rows
        for k, have in r.partial.items()
    ]
    # An ensemble row names its member runs and the weights each got (validated by validate_record).
    lines += [
        f"- {one_line(r.label)} ({_subset_text(r.subset)}): {one_line(run.record.run_id)} fuses "
        + " + ".join(f"{one_line(m)} (weight {w:.2f})" for m, w in zip(run.record.tags["members"], run.record.tags["weights"]))
        for r in rows
        for run in r.runs
        if run.record.framework == "ensemble"
    ]
    return "Notes:\n" + "\n".join(lines) + "\n" if lines else ""


def format_others(runs: RunSet, fmt: str = "md") -> str:
    """Runs not averaged in (failed, running, interrupted, stopped, dry runs) and skipped records.

    ``fmt="csv"`` gives one row per entry (run_id, model, status, study, trial,
    path, reason); anything else a plain-text list for the terminal and
    Markdown, one line per entry (record text is put on one line, so a
    hostile run id cannot forge entries).
    """
    entries = []
    for r in runs.others:
        rec = r.record
        error = (rec.error or "").strip().splitlines()
        reason = "; ".join(part for part in (runs.details.get(r.run_dir, ""), error[-1] if error else "") if part)
        entries.append(
            [
                rec.run_id,
                rec.model,
                runs.reasons.get(r.run_dir, rec.status),
                str(rec.tags.get("study", "")),
                str(rec.tags.get("trial", "")),
                str(r.run_dir),
                reason,
            ]
        )
    for skip in runs.skipped:
        entries.append(["", "", skip.status, "", "", str(skip.path), skip.reason])
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["run_id", "model", "status", "study", "trial", "path", "reason"])
        w.writerows(entries)
        return buf.getvalue()
    if not entries:
        return ""
    lines = ["Not in the table (not averaged in):"]
    for run_id, model, status, study, trial, path, reason in (map(one_line, e) for e in entries):
        what = f"{run_id} ({model})" if run_id else path
        extra = f" study {study} trial {trial}" if study else ""
        lines.append(f"- {what}: {status}{extra}" + (f": {reason}" if reason else ""))
    return "\n".join(lines) + "\n"
