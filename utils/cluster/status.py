"""Where a plan stands (one status type for every step of experiments and sweeps), and its report.

A task is ``completed`` once its output exists (a complete store, a completed
run record, a study's ``best.json``, an export); before that its job's state
is shown (``pending``, ``running``, ``requeued``); a job that ended without
the output is ``failed`` (or ``cancelled``) with the reason (SLURM's state
and exit code, the record's error) and its log.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from utils.cluster.runner import Facts, gather, job_log
from utils.cluster.slurm import RUNNING
from utils.core.files import atomic_write_text
from utils.core.records import record_or_none
from utils.experiment import Plan

__all__ = ["TaskStatus", "experiment_report", "format_status", "plan_status"]

@dataclass
class TaskStatus:
    """One task of a plan: a store, run, study, ensemble, export or the report."""

    key: str  # store:<name>, run:<run id>, tune:<study>, ensemble:<name>, export:<name>, report
    state: str  # completed, pending, running, requeued, failed, cancelled, not submitted
    job: str = ""
    value: float | None = None  # a run's or ensemble's test top-1, a study's best objective
    reason: str = ""
    log: str = ""

    @property
    def name(self) -> str:
        return self.key.partition(":")[2] or self.key


def _value(key: str, path: str) -> float | None:
    if key.startswith(("run:", "ensemble:")):
        record = record_or_none(path)
        return record.metrics.get("test", {}).get("top1") if record else None
    if key.startswith("tune:"):
        try:
            return json.loads(Path(path).read_text())["objective"]["value"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return None


def plan_status(plan: Plan, facts: Facts | None = None) -> list[TaskStatus]:
    """Every task of the plan, as SLURM, ``submitted.json`` and the outputs say now."""
    facts = facts or gather(plan)
    out = []
    for step in plan.steps:
        for key, _ in step.tasks:
            job, st, path = facts.jobs.get(key, ""), facts.state(key), plan.outputs.get(key, "")
            s = TaskStatus(key, "not submitted", job)
            record = record_or_none(path) if key.startswith(("run:", "ensemble:")) else None
            if key == "report":
                s.state = "not submitted" if not job else "pending" if st is None else st.state.lower() if not st.active \
                    else "running" if st.state in RUNNING else "pending"  # fmt: skip
            elif facts.finished(key, step.shards):
                s.state, s.value = "completed", _value(key, path)
            elif st is not None and st.active:
                s.state = "running" if st.state in RUNNING else "requeued" if st.requeued or "REQUEUE" in st.state else "pending"
                s.reason = st.reason
            elif st is not None or (record and record.status in ("failed", "cancelled")):
                cancelled = (record and record.status == "cancelled") or (st and st.state == "CANCELLED" and not record)
                s.state = "cancelled" if cancelled else "failed"
                why = [f"{st.state} (exit {st.exit_code})"] if st and st.state != "COMPLETED" else []
                error = (record.error or "").strip().splitlines() if record else []
                why.append(error[-1] if error else f"run record: {record.status}" if record else
                           "incomplete (see prepare_report.json)" if step.shards else "no output")  # fmt: skip
                s.reason = "; ".join(why)
            elif job:  # SLURM forgets an array task cancelled while it waited; no output came either
                s.state, s.reason = "failed", f"CANCELLED or lost: SLURM lists no job {job} any more, and there is no output"
            elif facts.local.get(key, 0) != 0:
                s.state, s.reason = "failed", f"exit {facts.local[key]} (run here with --local; its messages went to that terminal)"
            elif record is not None:
                s.state = record.status  # run here without SLURM, and stopped
            if job and s.state != "completed":
                log = job_log(plan, step, job)
                s.log = str(log) if log.exists() else f"none yet ({log})"
            out.append(s)
    return out


def format_status(plan: Plan, tasks: list[TaskStatus]) -> str:
    """The status as aligned tables per kind (what ``experiment.py status`` and ``sweep.py status`` print)."""
    out = [f"experiment {plan.exp.name}  ({plan.exp.path} -> {plan.exp.results})"]
    titles = {"store": "stores", "run": "runs", "tune": "tuning", "ensemble": "ensembles", "export": "exports"}
    for prefix, title in titles.items():
        rows = [t for t in tasks if t.key.startswith(prefix + ":")]
        if not rows:
            continue
        out.append(f"{title}:")
        out.append(f"  {'name':<40} {'state':<14} {'value':>6}  job")
        for t in rows:
            value = f"{t.value:.4f}" if t.value is not None else "-"
            out.append(f"  {t.name:<40} {t.state:<14} {value:>6}  {t.job}")
            if t.state in ("failed", "cancelled"):
                out.append(f"      why: {t.reason}\n      log: {t.log or '-'}")
        counts = {s: sum(t.state == s for t in rows) for s in dict.fromkeys(t.state for t in rows)}
        out.append("  " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    report = next(t for t in tasks if t.key == "report")
    out.append(f"report: {report.state}" + (f" (job {report.job})" if report.job else ""))
    return "\n".join(out)


def experiment_report(plan: Plan, *, say: Callable[[str], None] = print):
    """The result table of the plan's runs (trials and ensembles included); what did not complete is listed apart.

    Writes ``<results>/tables/summary.{md,csv,tex}``, the plots and ``<results>/tables/incomplete_runs.csv``.
    """
    from utils.report import build_report, write_outputs
    from utils.reporting.tables import parse_metrics

    results, r = Path(plan.exp.results), plan.exp.spec.report
    report = build_report(results, metrics=parse_metrics(",".join(r.metrics or [])), split=r.split,
                          published=r.published, include_dry_runs=r.include_dry_runs)  # fmt: skip
    write_outputs(report, results / "tables", results / "plots")
    for fmt in r.formats:
        say(report.table(fmt).rstrip("\n"))
    if report.remarks():
        say(report.remarks().rstrip("\n"))
    missing = [t for t in plan_status(plan) if t.key != "report" and t.state != "completed"]
    buf = io.StringIO()
    csv.writer(buf).writerows([["task", "state", "reason", "log"], *([t.key, t.state, t.reason, t.log] for t in missing)])
    atomic_write_text(results / "tables" / "incomplete_runs.csv", buf.getvalue())
    if missing:
        say(f"{len(missing)} of {len(plan.outputs)} planned tasks did not complete (not in the table):")
        for t in missing:
            say(f"  {t.key}: {t.state}" + (f" ({t.reason})" if t.reason else "") + (f"; log {t.log}" if t.log else ""))
    say(f"tables: {results / 'tables'}, plots: {results / 'plots'}")
    return report
