"""SLURM job files: a frozen ``SlurmConfig`` per kind of job and a pure renderer.

``render_sbatch(cfg, command, job_name=...)`` turns a config and a command
into the text of a job file that is both an sbatch script and a plain bash
script. Profile values reach the shell only as single-quoted assignments
(``shlex.quote``), and ``#SBATCH`` values are checked against a small
character set, so a profile value cannot inject shell code or break a
directive line. See ``slurm/cluster.toml`` for the profile format.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path

from utils.cluster.body import BODY_ENV, BODY_LAUNCH, BODY_ROOT
from utils.core.preempt import REQUEUE_EXIT_CODE

__all__ = [
    "JOB_KINDS",
    "KIND_DEFAULTS",
    "SlurmConfig",
    "load_profile",
    "profile_from_dict",
    "render_sbatch",
    "sanitize_job_name",
    "valid_keys",
]

# The kinds of job the suite submits; a profile may override any field per kind.
JOB_KINDS = ("train", "preprocess", "tune", "tune_distributed", "report")

MAIL_TYPES = {"NONE", "BEGIN", "END", "FAIL", "REQUEUE", "ALL", "INVALID_DEPEND", "STAGE_OUT", "TIME_LIMIT",
              "TIME_LIMIT_90", "TIME_LIMIT_80", "TIME_LIMIT_50", "ARRAY_TASKS"}  # fmt: skip

# Characters an #SBATCH value may hold. sbatch splits directive lines on blanks,
# and anything shell-like ($, quotes, ;, `, #, \) has no business there.
_DIRECTIVE_VALUE = re.compile(r"[A-Za-z0-9_.,:@%+=/*&|!\[\]-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class SlurmConfig:
    """Resources and environment of one kind of job. None = no line at all.

    Attributes:
        partition: ``--partition``.
        account: ``--account``.
        qos: ``--qos``.
        gpus: generic resources, ``--gres`` (``"gpu:1"``, ``"gpu:a100:2"``).
        constraint: ``--constraint`` (node features, ``"a100|h100"``).
        cpus_per_task: ``--cpus-per-task``.
        mem_gb: ``--mem`` in GB.
        time_min: ``--time`` in minutes.
        mail_user: ``--mail-user``.
        mail_type: ``--mail-type`` (comma-separated SLURM mail types).
        signal_s: seconds before the time limit at which SLURM sends USR1 to the
            job script (``--signal=B:USR1@<s>``), which asks Python to checkpoint.
        requeue: ``--requeue`` (and ``--open-mode=append``, so the log of a
            requeued job continues instead of starting over).
        array_size: tasks of an array job (preprocessing shards; chief + tuning workers).
        array_parallel: at most this many array tasks at once (``--array=...%N``).
        log_dir: where ``<job name>-<job id>.out`` goes, relative to the directory
            sbatch is called from (the repo root); it must exist (sbatch will not create it).
        extra_directives: more ``--key=value`` or ``--flag`` directives, verbatim.
        modules: environment modules to ``module load``, in order.
        venv: virtualenv to activate (relative to the repo root, or absolute);
            ``SLR_VENV`` in the submitting environment overrides it.
        conda_env: conda environment to activate instead of a venv.
        env: variables to export in the job (``{"NCCL_DEBUG": "WARN"}``).
        data_root: directory of the clip stores.
        raw_root: directory with ``WLASL_v0.3.json`` and ``videos/``.
        results_root: results directory (``runs/``, ``tables/``, ...).
        subset: WLASL-N the jobs preprocess and train on.
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus: str | None = None
    constraint: str | None = None
    cpus_per_task: int | None = None
    mem_gb: int | None = None
    time_min: int | None = None
    mail_user: str | None = None
    mail_type: str | None = None
    signal_s: int | None = None
    requeue: bool = False
    array_size: int | None = None
    array_parallel: int | None = None
    log_dir: str = "logs"
    extra_directives: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    venv: str | None = ".venv"
    conda_env: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    data_root: str = "data"
    raw_root: str = "raw"
    results_root: str = "results"
    subset: int = 100

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str) and ("\n" in value or "\r" in value or "\0" in value):
                raise ValueError(f"SlurmConfig.{f.name} must be one line, received {value!r}")
        for name in ("cpus_per_task", "mem_gb", "time_min", "signal_s", "array_size", "array_parallel", "subset"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"SlurmConfig.{name} expected >= 1 (or unset), received {value!r}")
        for name, value in self._directives():
            if value is not None and not _DIRECTIVE_VALUE.fullmatch(value):
                raise ValueError(
                    f"SlurmConfig value for --{name} may hold only letters, digits and _.,:@%+=/*&|![]-, "
                    f"received {value!r}; fix it in the cluster profile"
                )
        if self.mail_type:
            bad = [t for t in self.mail_type.split(",") if t not in MAIL_TYPES]
            if bad:
                raise ValueError(f"SlurmConfig.mail_type expected a comma list of {sorted(MAIL_TYPES)}, received {bad}")
        if self.venv and self.conda_env:
            raise ValueError(
                f"SlurmConfig sets both venv={self.venv!r} and conda_env={self.conda_env!r}; "
                'keep one (set the other to "")'
            )
        for key, _ in self.env:
            if not _ENV_NAME.fullmatch(key):
                raise ValueError(f"SlurmConfig.env expected variable names like NCCL_DEBUG, received {key!r}")

    def _directives(self) -> list[tuple[str, str | None]]:
        """``(option, value)`` pairs, value None for a bare flag; unset fields are left out."""
        out: list[tuple[str, str | None]] = []
        plain = {"partition": self.partition, "account": self.account, "qos": self.qos, "gres": self.gpus,
                 "constraint": self.constraint, "mail-user": self.mail_user, "mail-type": self.mail_type}  # fmt: skip
        out += [(k, v) for k, v in plain.items() if v is not None]
        if self.cpus_per_task is not None:
            out.append(("cpus-per-task", str(self.cpus_per_task)))
        if self.mem_gb is not None:
            out.append(("mem", f"{self.mem_gb}G"))
        if self.time_min is not None:
            out.append(("time", str(self.time_min)))
        if self.signal_s is not None:
            out.append(("signal", f"B:USR1@{self.signal_s}"))
        if self.requeue:
            out += [("requeue", None), ("open-mode", "append")]
        for item in self.extra_directives:
            key, sep, value = item.removeprefix("--").partition("=")
            if not item.startswith("--") or not re.fullmatch(r"[a-z][a-z-]*", key):
                raise ValueError(f"SlurmConfig.extra_directives expected '--key=value' or '--flag', received {item!r}")
            out.append((key, value if sep else None))
        return out


def valid_keys() -> str:
    """Every profile key with its default, one per line (for error messages and docs)."""
    return "\n".join(f"  {f.name} = {_default(f)!r}" for f in dataclasses.fields(SlurmConfig))


def _default(f: dataclasses.Field):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


# Per kind of job, code defaults over SlurmConfig's own (a profile overrides both).
KIND_DEFAULTS: dict[str, dict] = {
    "train": {"gpus": "gpu:1", "cpus_per_task": 8, "mem_gb": 32, "time_min": 1440, "signal_s": 300, "requeue": True},
    "preprocess": {"cpus_per_task": 4, "mem_gb": 8, "time_min": 240, "array_size": 4},
    "tune": {"gpus": "gpu:1", "cpus_per_task": 8, "mem_gb": 32, "time_min": 2880, "signal_s": 300, "requeue": True},
    "tune_distributed": {"gpus": "gpu:1", "cpus_per_task": 8, "mem_gb": 32, "time_min": 2880, "array_size": 3},
    "report": {"cpus_per_task": 1, "mem_gb": 4, "time_min": 30},
}


def _coerce(name: str, value, where: str):
    """A TOML value -> the field's type; "" unsets an optional field."""
    hint = typing.get_type_hints(SlurmConfig)[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    if value == "" and optional:
        return None
    if name == "env":
        if not isinstance(value, dict) or not all(isinstance(v, str | int | float) for v in value.values()):
            raise TypeError(f'{where}: env expected a table of NAME = "value", received {value!r}')
        return tuple(sorted((str(k), str(v)) for k, v in value.items()))
    if typing.get_origin(base) is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TypeError(f"{where}: {name} expected a list of strings, received {value!r}")
        return tuple(value)
    ok = isinstance(value, base) and not (base is int and isinstance(value, bool))
    if not ok:
        raise TypeError(f"{where}: {name} expected {base.__name__}, received {value!r} ({type(value).__name__})")
    return value


def _overrides(table: dict, where: str) -> dict:
    known = {f.name for f in dataclasses.fields(SlurmConfig)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise KeyError(
            f"{where}: unknown key(s) {unknown}. Valid keys (with their defaults):\n{valid_keys()}\n"
            f"and one table per kind of job: {list(JOB_KINDS)}"
        )
    return {k: _coerce(k, v, where) for k, v in table.items()}


def profile_from_dict(data: dict, where: str = "profile") -> dict[str, SlurmConfig]:
    """Code defaults <- the profile's top-level keys <- its ``[kind]`` tables.

    Returns:
        ``{kind: SlurmConfig}`` for every kind in :data:`JOB_KINDS`.

    Raises:
        KeyError: a key that is no SlurmConfig field nor a job kind (lists the valid ones).
        TypeError, ValueError: a value of the wrong type or out of range.
    """
    top = {k: v for k, v in data.items() if k not in JOB_KINDS}
    common = _overrides(top, where)
    profile = {}
    for kind in JOB_KINDS:
        table = data.get(kind, {})
        if not isinstance(table, dict):
            raise TypeError(f"{where}: [{kind}] expected a table of overrides, received {table!r}")
        merged = {**KIND_DEFAULTS[kind], **common, **_overrides(table, f"{where} [{kind}]")}
        profile[kind] = SlurmConfig(**merged)
    return profile


def load_profile(path: str | Path) -> dict[str, SlurmConfig]:
    """Read a TOML cluster profile (see ``slurm/cluster.toml``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cluster profile {path} not found; copy slurm/cluster.toml and edit it")
    with path.open("rb") as fh:
        try:
            data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: not valid TOML: {e}") from None
    return profile_from_dict(data, where=str(path))


def sanitize_job_name(name: str) -> str:
    """Letters, digits, ``_.-`` only, at most 64 characters (it also names the log file)."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.-")[:64]
    if not clean:
        raise ValueError(f"job name expected letters or digits, received {name!r}")
    return clean


def _directive_lines(cfg: SlurmConfig, job_name: str, array: str | None) -> list[str]:
    pairs = cfg._directives() + [("job-name", job_name)]
    log = cfg.log_dir.rstrip("/") or "."
    pairs.append(("output", f"{log}/%x-%A_%a.out" if array else f"{log}/%x-%j.out"))
    if array:
        pairs.append(("array", array + (f"%{cfg.array_parallel}" if cfg.array_parallel else "")))
    names = [k for k, _ in pairs]
    dup = sorted({k for k in names if names.count(k) > 1})
    if dup:
        raise ValueError(f"directive(s) {dup} given twice; drop them from extra_directives")
    for key, value in pairs:
        if value is not None and not _DIRECTIVE_VALUE.fullmatch(value):
            raise ValueError(f"--{key} value {value!r} holds characters an #SBATCH line cannot carry")
    # Quoting is a no-op for the character set above except for &|![]*, which
    # sbatch's own directive parser unquotes.
    return [f"#SBATCH --{k}" if v is None else f"#SBATCH --{k}={shlex.quote(v)}" for k, v in sorted(pairs)]


def _q(value) -> str:
    return shlex.quote(str(value))


def render_sbatch(
    cfg: SlurmConfig,
    command: str,
    *,
    job_name: str,
    array: str | None = None,
    prelude: str = "",
    dry_run_flag: str | None = None,
    description: str = "",
    source: str = "slurm/cluster.toml",
) -> str:
    """The text of one job file. Pure: same arguments, same text.

    Args:
        cfg: resources and environment of this kind of job.
        command: trusted shell words run from the repo root (written by the
            suite, never from a profile); it may use ``$data_root``,
            ``$raw_root``, ``$results_root`` and ``$subset``. The job's own
            arguments (``sbatch job.slurm --epochs 50``) are appended.
        job_name: ``--job-name`` (sanitised) and the log file name.
        array: ``--array`` index range such as ``"0-3"``; None = a single job.
        prelude: trusted shell code run just before the command (e.g. roles in an array).
        dry_run_flag: flag appended when the environment has ``DRY_RUN=1``.
        description: a comment line saying what the job does.
        source: the profile named in the header.

    Returns:
        The job file text (``#!/bin/bash``, sorted ``#SBATCH`` lines, body).
    """
    name = sanitize_job_name(job_name)
    lines = ["#!/bin/bash", *_directive_lines(cfg, name, array)]
    lines += [
        f"# {description or name}",
        f"# Generated by main/make_slurm.py from {source}: edit the profile and regenerate, never this file.",
        f"#   sbatch slurm/{name}.slurm [args]     submit from the repo root; args go to the command",
        f"#   bash slurm/{name}.slurm [args]       run it here; DRY_RUN=1 for the quick check",
        "set -euo pipefail",
        "",
        "# ---- values from the cluster profile",
        f"data_root={_q(cfg.data_root)}",
        f"raw_root={_q(cfg.raw_root)}",
        f"results_root={_q(cfg.results_root)}",
        f"subset={_q(cfg.subset)}",
        f"venv={_q(cfg.venv or '')}",
        f"conda_env={_q(cfg.conda_env or '')}",
        f"modules=({' '.join(_q(m) for m in cfg.modules)})",
        "",
        BODY_ROOT,
        BODY_ENV,
    ]
    lines += [f"export {k}={_q(v)}" for k, v in cfg.env]
    lines += ["", BODY_LAUNCH.replace("@REQUEUE@", str(REQUEUE_EXIT_CODE))]
    if dry_run_flag:
        lines.append(f'dry_run=(); [ "${{DRY_RUN:-0}}" = 1 ] && dry_run=({_q(dry_run_flag)})')
    else:
        lines.append(
            'dry_run=(); [ "${DRY_RUN:-0}" = 1 ] && echo "[job] DRY_RUN: this job has no dry run; running it as is" >&2'
        )
    if prelude:
        lines += ["", prelude.strip("\n")]
    lines += ["", f'launch {command} "${{dry_run[@]}}" "$@"', ""]
    return "\n".join(lines)
