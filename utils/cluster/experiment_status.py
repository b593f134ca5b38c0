"""Where an experiment stands, and its report: states from SLURM (sacct/squeue) and the run records.

A run is ``completed`` (with its test top-1) once its record says so;
before that its array task's state is shown (``pending``, ``running``,
``requeued``), and a task that ended without a completed record is
``failed`` with the reason (SLURM's state, the record's error) and its log.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from utils.cluster.accounting import JobState, job_states
from utils.cluster.experiment import Plan, report_settings
from utils.cluster.experiment_files import job_log, store_done, submitted
from utils.core.records import RecordError, read_record

__all__ = ["PlanStatus", "RunStatus", "experiment_report", "format_status", "plan_status"]

_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING"}


@dataclass
class RunStatus:
    """One planned run: ``completed``, ``pending``, ``running``, ``requeued``, ``failed`` or ``not submitted``."""

    run_id: str
    model: str
    seed: int
    store: str
    state: str
    top1: float | None = None
    job: str = ""
    reason: str = ""
    log: str = ""


@dataclass
class PlanStatus:
    stores: list[tuple[str, str, str]]  # (name, state, job)
    runs: list[RunStatus]
    report: tuple[str, str]  # (state, job)


def _word(js: JobState) -> str:
    if js.state == "PENDING":
        return "requeued" if js.requeued else "pending"
    if js.state in _RUNNING:
        return "running"
    if js.state in ("REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"):
        return "requeued"
    return js.state.lower()


def plan_status(plan: Plan) -> PlanStatus:
    """Every store, run and the report job of the plan, as SLURM and the records say now."""
    results = Path(plan.exp.results)
    sub = submitted(plan)
    ids = [*sub["stores"].values(), *sub["runs"].values(), *([sub["report"]] if sub.get("report") else [])]
    live = job_states({i.split("_")[0] for i in ids if i})
    stores = []
    for s in plan.stores:
        job = sub["stores"].get(s.name, "")
        tasks = [st for j, st in live.items() if job and (j == job or j.startswith(f"{job}_"))]
        if store_done(s.out):
            state = "completed"
        elif any(t.active for t in tasks):
            state = "running" if any(t.state in _RUNNING for t in tasks) else "pending"
        elif tasks:
            state = f"failed ({', '.join(sorted({t.state for t in tasks if t.state != 'COMPLETED'})) or 'incomplete'})"
        else:
            state = "not prepared"
        stores.append((s.name, state, job))
    stages = {st.name: st for st in plan.stages}
    runs = []
    for r in plan.runs:
        job = sub["runs"].get(r.run_id, "")
        st = RunStatus(r.run_id, r.model, r.seed, r.store, "not submitted", job=job)
        record = None
        try:
            record = read_record(results / "runs" / r.run_id / "metrics.json")
        except (FileNotFoundError, RecordError, TypeError, ValueError):
            pass
        js = live.get(job)
        base = live.get(job.split("_")[0]) if "_" in job else None
        if js is None and base is not None and not base.active:
            js = base  # a whole array cancelled before it started: accounting keeps only the array
        if record is not None and record.status == "completed":
            st.state, st.top1 = "completed", record.metrics.get("test", {}).get("top1")
        elif js is not None and js.active:
            st.state = _word(js)
            st.reason = js.reason
        elif js is not None or (record is not None and record.status == "failed"):
            st.state = "failed"
            why = [f"{js.state} (exit {js.exit_code})"] if js is not None and js.state != "COMPLETED" else []
            error = (record.error or "").strip().splitlines() if record is not None else []
            why.append(error[-1] if error else f"run record: {record.status if record else 'none'}")
            st.reason = "; ".join(why)
        elif job and js is None:
            # SLURM forgets an array task cancelled while it waited; the record never came either.
            st.state = "failed"
            st.reason = f"CANCELLED or lost: SLURM lists no job {job} any more, and the run wrote no record"
        elif sub.get("local", {}).get(r.run_id, 0) != 0:  # run here (--local) and it exited non-zero
            st.state = "failed"
            st.reason = f"exit {sub['local'][r.run_id]} (run here with --local; its messages went to that terminal)"
        elif record is not None:
            st.state = record.status  # run here without SLURM and stopped
        log = job_log(plan, stages[f"train-{r.store}"], job) if job else None
        if log is not None:
            st.log = str(log) if log.exists() else f"none yet ({log})"
        runs.append(st)
    report_job = sub.get("report") or ""
    report_state = _word(live[report_job]) if report_job in live else ("not submitted" if not report_job else "unknown")
    return PlanStatus(stores, runs, (report_state, report_job))


def format_status(plan: Plan, st: PlanStatus) -> str:
    """The status as a few aligned tables (what ``experiment.py status`` prints)."""
    out = [f"experiment {plan.exp.name}  ({plan.exp.path} -> {plan.exp.results})", "stores:"]
    out += [f"  {name:<24} {state:<22} {('job ' + job) if job else ''}" for name, state, job in st.stores]
    out += ["runs:", f"  {'run':<40} {'state':<14} {'top1':>6}  job"]
    for r in st.runs:
        top1 = f"{r.top1:.4f}" if r.top1 is not None else "-"
        out.append(f"  {r.run_id:<40} {r.state:<14} {top1:>6}  {r.job}")
        if r.state == "failed":
            out.append(f"      why: {r.reason}\n      log: {r.log or '-'}")
    counts = {s: sum(r.state == s for r in st.runs) for s in dict.fromkeys(r.state for r in st.runs)}
    out.append("  " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    out.append(f"report: {st.report[0]}" + (f" (job {st.report[1]})" if st.report[1] else ""))
    return "\n".join(out)


def experiment_report(plan: Plan, *, say: Callable[[str], None] = print):
    """The result table of the experiment's runs; runs that did not complete are listed apart.

    Writes ``<results>/tables/summary.{md,csv,tex}``, the plots, and
    ``<results>/tables/incomplete_runs.csv``. Returns the utils.report Report.
    """
    from utils.report import build_report, write_outputs
    from utils.reporting.tables import DEFAULT_METRICS, parse_metrics

    results = Path(plan.exp.results)
    rs = report_settings(plan.exp)
    metrics = parse_metrics(rs["metrics"]) if rs["metrics"] else DEFAULT_METRICS
    report = build_report(results, metrics=metrics, split=rs["split"], published=rs["published"],
                          include_dry_runs=rs["include_dry_runs"])  # fmt: skip
    write_outputs(report, results / "tables", results / "plots")
    for fmt in rs["formats"]:
        say(report.table(fmt).rstrip("\n"))
    remarks = report.remarks()
    if remarks:
        say(remarks.rstrip("\n"))
    missing = [r for r in plan_status(plan).runs if r.state != "completed"]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["run_id", "model", "seed", "state", "reason", "log"])
    writer.writerows([r.run_id, r.model, r.seed, r.state, r.reason, r.log] for r in missing)
    (results / "tables").mkdir(parents=True, exist_ok=True)
    (results / "tables" / "incomplete_runs.csv").write_text(buf.getvalue())
    if missing:
        say(f"{len(missing)} of {len(plan.runs)} planned runs did not complete (not in the table):")
        for r in missing:
            say(f"  {r.run_id}: {r.state}" + (f" ({r.reason})" if r.reason else "") + (f"; log {r.log}" if r.log else ""))
    say(f"tables: {results / 'tables'}, plots: {results / 'plots'}")
    return report
