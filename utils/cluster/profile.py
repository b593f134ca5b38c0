"""The cluster profile: a frozen ``SlurmConfig`` per kind of job, read from TOML.

:data:`DIRECTIVES` says how each resource field becomes an ``#SBATCH``
directive; every way onto SLURM (committed job files, experiments, sweeps)
renders through it. Values are checked once, from the dataclass's type
hints (:func:`utils.core.config.coerce`), when the config is built. See
``slurm/cluster.toml`` for the profile format.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path

from utils.cluster.shell import check_directive, export_line
from utils.core.argv import check_one_line
from utils.core.config import check_range, coerce

__all__ = ["ALIASES", "DIRECTIVES", "JOB_KINDS", "KIND_DEFAULTS", "SlurmConfig", "load_profile", "parse_time_min",
           "profile_from_dict", "read_profile_file", "valid_keys"]  # fmt: skip

# The kinds of job the suite submits; a profile may override any field per kind.
JOB_KINDS = ("train", "preprocess", "tune", "tune_distributed", "report", "export")

MAIL_TYPES = {"NONE", "BEGIN", "END", "FAIL", "REQUEUE", "ALL", "INVALID_DEPEND", "STAGE_OUT", "TIME_LIMIT",
              "TIME_LIMIT_90", "TIME_LIMIT_80", "TIME_LIMIT_50", "ARRAY_TASKS"}  # fmt: skip


# field -> its sbatch option (#SBATCH --<option>=<value>), in one place.
DIRECTIVES = {"partition": "partition", "account": "account", "qos": "qos", "gpus": "gres", "constraint": "constraint",
              "nodes": "nodes", "ntasks_per_node": "ntasks-per-node", "cpus_per_task": "cpus-per-task", "mem_gb": "mem",
              "time_min": "time", "mail_user": "mail-user", "mail_type": "mail-type"}  # fmt: skip


@dataclass(frozen=True)
class SlurmConfig:
    """Resources and environment of one kind of job. None = no line at all.

    ``partition``, ``account``, ``qos``, ``constraint`` (node features, ``"a100|h100"``),
    ``cpus_per_task``, ``mail_user`` and ``mail_type`` are the sbatch options of those
    names (:data:`DIRECTIVES`).

    Attributes:
        gpus: generic resources per node, ``--gres`` (``"gpu:1"``, ``"gpu:a100:2"``).
        nodes, ntasks_per_node: ``--nodes``, ``--ntasks-per-node`` (one per GPU for DDP); more than
            one task in all launches the command with ``srun``, once per task.
        mem_gb: ``--mem`` in GB (per node).
        time_min: ``--time`` in minutes.
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
        venv: virtualenv that runs the command (relative to the repo root, or absolute);
            ``SLR_VENV`` in the submitting environment overrides it.
        conda_env: conda environment to activate instead of a venv.
        env: variables for the command (``{"NCCL_DEBUG": "WARN"}``).
        data_root, raw_root, results_root: the stores, ``WLASL_v0.3.json`` + ``videos/``, the results.
        subset: WLASL-N the jobs preprocess and train on.
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus: str | None = None
    constraint: str | None = None
    nodes: int | None = None
    ntasks_per_node: int | None = None
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
            if isinstance(value, str):
                check_one_line(value, f"SlurmConfig.{f.name}")
            elif isinstance(value, tuple):
                for item in value:
                    for part in item if isinstance(item, tuple) else (item,):
                        check_one_line(str(part), f"SlurmConfig.{f.name}")
        for name in ("nodes", "ntasks_per_node", "cpus_per_task", "mem_gb", "time_min", "signal_s", "array_size",
                     "array_parallel", "subset"):  # fmt: skip
            check_range(self, name, 1)
        for name, value in self.sbatch_options():
            if value is not None:
                check_directive(value, f"SlurmConfig value for --{name}")
        if self.mail_type:
            bad = [t for t in self.mail_type.split(",") if t not in MAIL_TYPES]
            if bad:
                raise ValueError(f"SlurmConfig.mail_type expected a comma list of {sorted(MAIL_TYPES)}, received {bad}")
        if self.venv and self.conda_env:
            raise ValueError(
                f"SlurmConfig sets both venv={self.venv!r} and conda_env={self.conda_env!r}; "
                'keep one (set the other to "")'
            )
        for key, value in self.env:
            export_line(key, value)  # raises on a bad variable name

    @property
    def tasks(self) -> int:
        """Tasks of one job (nodes x tasks per node); above 1 the command runs under ``srun``."""
        return (self.nodes or 1) * (self.ntasks_per_node or 1)

    def sbatch_options(self) -> list[tuple[str, str | None]]:
        """``(option, value)`` for ``#SBATCH`` lines, value None for a bare flag; unset fields left out."""
        out: list[tuple[str, str | None]] = []
        for field, option in DIRECTIVES.items():
            value = getattr(self, field)
            if value is not None:
                out.append((option, f"{value}G" if field == "mem_gb" else str(value)))
        if self.signal_s is not None:
            out.append(("signal", f"B:USR1@{self.signal_s}"))
        if self.requeue:
            out += [("requeue", None), ("open-mode", "append")]
        out += self._extra()
        return out

    def _extra(self) -> list[tuple[str, str | None]]:
        out = []
        for item in self.extra_directives:
            key, sep, value = item.removeprefix("--").partition("=")
            if not item.startswith("--") or not re.fullmatch(r"[a-z][a-z-]*", key):
                raise ValueError(f"SlurmConfig.extra_directives expected '--key=value' or '--flag', received {item!r}")
            out.append((key, value if sep else None))
        return out


# Per kind of job, code defaults over SlurmConfig's own (a profile overrides both).
KIND_DEFAULTS: dict[str, dict] = {
    "train": {"gpus": "gpu:1", "cpus_per_task": 8, "mem_gb": 32, "time_min": 1440, "signal_s": 300, "requeue": True},
    "preprocess": {"cpus_per_task": 4, "mem_gb": 8, "time_min": 240, "array_size": 4},
    "tune": {"gpus": "gpu:1", "cpus_per_task": 8, "mem_gb": 32, "time_min": 2880, "signal_s": 300, "requeue": True},
    "tune_distributed": {"gpus": "gpu:1", "cpus_per_task": 8, "mem_gb": 32, "time_min": 2880, "array_size": 3},
    "report": {"cpus_per_task": 1, "mem_gb": 4, "time_min": 30},
    "export": {"cpus_per_task": 4, "mem_gb": 16, "time_min": 120},
}

# SLURM's own spellings, accepted for the profile keys they mean.
ALIASES = {"gres": "gpus", "time": "time_min", "cpus-per-task": "cpus_per_task", "ntasks-per-node": "ntasks_per_node",
           "mail-user": "mail_user", "mail-type": "mail_type"}  # fmt: skip
# Keys whose SLURM spelling needs a change of unit: suggested, not converted.
_HINTS = {"mem": "mem_gb (an integer number of GB; SLURM's --mem counts MB by default)",
          "gpu": "gpus (the --gres value, e.g. \"gpu:1\")",
          "cpus": "cpus_per_task", "ntasks": "nodes and ntasks_per_node"}  # fmt: skip


def _default(f: dataclasses.Field):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def valid_keys() -> str:
    """Every profile key with its default and the per-kind defaults, one per line."""
    lines = []
    for f in dataclasses.fields(SlurmConfig):
        kinds = [f"{k}: {d[f.name]!r}" for k, d in KIND_DEFAULTS.items() if f.name in d]
        lines.append(f"  {f.name} = {_default(f)!r}" + (f"   (jobs: {', '.join(kinds)})" if kinds else ""))
    aliases = ", ".join(f"{a} = {k}" for a, k in ALIASES.items())
    return "\n".join(lines) + f"\n  (SLURM spellings accepted: {aliases})"


_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")


def parse_time_min(value, where: str = "time") -> int:
    """SLURM time (``90``, ``"1:30:00"``, ``"2-00:00:00"``, ``"1-12"``) -> whole minutes (rounded up)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _TIME.fullmatch(str(value).strip()) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"{where}: expected minutes or SLURM time such as \"1:30:00\" or \"2-00:00:00\", "
                         f"received {value!r}")  # fmt: skip
    days, a, b, c = m.groups()
    parts = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # days-hours[:minutes[:seconds]]
        h, mi, s = (parts + [0, 0])[:3]
        seconds = int(days) * 86400 + h * 3600 + mi * 60 + s
    elif len(parts) == 1:  # minutes
        seconds = parts[0] * 60
    elif len(parts) == 2:  # minutes:seconds
        seconds = parts[0] * 60 + parts[1]
    else:  # hours:minutes:seconds
        seconds = parts[0] * 3600 + parts[1] * 60 + parts[2]
    return max(1, -(-seconds // 60))


def _coerce(name: str, value, where: str):
    """A TOML value -> the field's type by the one coercion; "" unsets an optional field; ``env`` is a table."""
    hint = typing.get_type_hints(SlurmConfig)[name]
    if value == "" and type(None) in typing.get_args(hint):
        return None
    if name == "env":
        if not isinstance(value, dict) or not all(isinstance(v, str | int | float) for v in value.values()):
            raise TypeError(f'{where}: env expected a table of NAME = "value", received {value!r}')
        return tuple(sorted((str(k), str(v)) for k, v in value.items()))
    return coerce(hint, value, where, path=(name,))


def _overrides(table: dict, where: str) -> dict:
    known = {f.name for f in dataclasses.fields(SlurmConfig)}
    out = {}
    for key, value in table.items():
        name = ALIASES.get(key, key)
        if name not in known:
            hint = _HINTS.get(key) or ", ".join(difflib.get_close_matches(key, sorted(known) + list(ALIASES), n=3))
            raise KeyError(
                f"{where}: unknown key {key!r}" + (f" (did you mean {hint}?)" if hint else "")
                + f". Valid keys (with their defaults):\n{valid_keys()}\nand one table per kind of job: {list(JOB_KINDS)}"
            )
        if name in out:
            raise KeyError(f"{where}: {name} is given twice (as {name!r} and its SLURM spelling); keep one")
        if name == "time_min" and value != "":
            value = parse_time_min(value, f"{where}: {key}")
        out[name] = _coerce(name, value, where)
    return out


def profile_from_dict(data: dict, where: str = "profile") -> dict[str, SlurmConfig]:
    """Code defaults <- the profile's top-level keys <- its ``[kind]`` tables.

    Returns:
        ``{kind: SlurmConfig}`` for every kind in :data:`JOB_KINDS`.

    Raises:
        KeyError: a key that is no SlurmConfig field, alias nor job kind (lists the valid ones).
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


def read_profile_file(path: str | Path) -> dict:
    """A TOML cluster profile's tables as they are in the file (:func:`profile_from_dict` checks them)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cluster profile {path} not found; copy slurm/cluster.toml and edit it")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from None


def load_profile(path: str | Path) -> dict[str, SlurmConfig]:
    """Read a TOML cluster profile (see ``slurm/cluster.toml``)."""
    return profile_from_dict(read_profile_file(path), where=str(path))
