"""The bash body of every job file (see :func:`utils.cluster.sbatch.render_sbatch`).

Trusted text written here, never from a profile: profile values reach it
only as the quoted variables ``data_root``, ``raw_root``, ``results_root``,
``subset``, ``venv``, ``conda_env``, ``root_hint``, ``srun_tasks`` and the
array ``modules``.
"""

__all__ = ["BODY_ENV", "BODY_LAUNCH", "BODY_ROOT"]

# sbatch runs a *copy* of the job file from its spool directory, so the file's own
# path says nothing about the repo under SLURM; the job starts in the directory
# sbatch was called from, and scontrol knows the path sbatch was given (Command=).
# The root is the first folder holding main/make_slurm.py, looking upwards from
# SLR_ROOT (or the root the file was generated for), the job file's folder and
# the submit directory: so job files in slurm/, slurm/<cluster>/ or elsewhere all
# find it. The log still goes to <submit dir>/<log_dir>.
BODY_ROOT = r"""# ---- the repo root
find_root() {  # the first folder upwards from $1 that holds main/make_slurm.py
  local d
  d=$(cd "$1" 2>/dev/null && pwd -P) || return 1
  while :; do
    [ -f "$d/main/make_slurm.py" ] && { printf '%s\n' "$d"; return 0; }
    [ "$d" = / ] && return 1
    d=$(dirname "$d")
  done
}
starts=()
[ -z "${SLR_ROOT:-}" ] || starts+=("$SLR_ROOT")
[ -z "$root_hint" ] || starts+=("$root_hint")
if [ -n "${SLURM_JOB_ID:-}" ]; then
  submit_dir=${SLURM_SUBMIT_DIR:-$PWD}
  if [ -f "$submit_dir/main/make_slurm.py" ]; then
    starts+=("$submit_dir")
  else
    script=$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null | sed -n 's/^ *Command=\([^ ]*\).*/\1/p' | head -n 1)
    [ -z "$script" ] || starts+=("$(dirname "$script")")
    starts+=("$submit_dir")
  fi
else
  starts+=("$(dirname "${BASH_SOURCE[0]}")" "$PWD")
fi
root=
for start in "${starts[@]}"; do root=$(find_root "$start") && break; done
if [ -z "$root" ]; then
  echo "error: found no SLR Suite repo (a folder with main/make_slurm.py) above ${starts[*]}; submit from the repo root (cd <repo> && sbatch slurm/<job>.slurm) or set SLR_ROOT=/path/to/the/repo" >&2
  exit 2
fi
cd "$root" || exit 2"""

BODY_ENV = r"""
# ---- environment
if [ ${#modules[@]} -gt 0 ]; then
  if ! command -v module >/dev/null 2>&1; then
    for f in /etc/profile.d/lmod.sh /etc/profile.d/modules.sh; do [ -f "$f" ] && . "$f" && break; done
  fi
  command -v module >/dev/null 2>&1 || { echo "error: the profile lists modules ${modules[*]} but this machine has no 'module' command" >&2; exit 2; }
  set +u  # module and conda scripts read unset variables
  for m in "${modules[@]}"; do module load "$m"; done
  set -u
fi
[ -z "${SLR_VENV:-}" ] || venv=$SLR_VENV
if [ -n "$conda_env" ]; then
  command -v conda >/dev/null 2>&1 || { echo "error: the profile names conda env $conda_env but conda is not on PATH" >&2; exit 2; }
  set +u
  eval "$(conda shell.bash hook)"
  conda activate "$conda_env"
  set -u
elif [ -n "$venv" ]; then
  if [ ! -f "$venv/bin/activate" ]; then
    echo "error: no virtualenv at $venv (from the cluster profile); run 'make setup', or set SLR_VENV=/path/to/venv when submitting" >&2
    exit 2
  fi
  . "$venv/bin/activate"
fi"""

# SLURM's warning signal (--signal=B:USR1@s, or scancel --signal=USR1 --batch)
# reaches only this batch shell, and a shell does not run traps while it waits
# for a foreground child: so the command runs in the background, the traps pass
# the signal on, and `wait` is repeated until the child is really gone. The
# header names an array task as squeue does (18_1), so logs and queue agree.
BODY_LAUNCH = r"""# ---- run, passing SLURM's signals on; exit @REQUEUE@ = checkpointed, requeue me
job_label=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID:-}}
job_label=${job_label:-${SLURM_JOB_ID:-}}
echo "[job] ${SLURM_JOB_NAME:-local} ${job_label:+job $job_label }on $(hostname) at $(date -u +%FT%TZ) (restarts: ${SLURM_RESTART_COUNT:-0}) in $PWD" >&2
child=
forward() {
  echo "[job] got SIG$1: passing it to the command (pid ${child:-none}) so it checkpoints" >&2
  [ -z "$child" ] || kill -s "$1" "$child" 2>/dev/null || true
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM
launch() {
  # Several tasks under SLURM: srun starts the command once per task and passes
  # the forwarded signals on to each; srun's exit code is the tasks' highest.
  if [ "$srun_tasks" = 1 ] && [ -n "${SLURM_JOB_ID:-}" ]; then set -- srun "$@"; fi
  "$@" &
  child=$!
  local rc
  while :; do
    wait "$child" && rc=0 || rc=$?
    kill -0 "$child" 2>/dev/null || break  # still alive: a signal cut the wait short
  done
  if [ "$rc" = @REQUEUE@ ]; then
    if [ -n "${SLURM_JOB_ID:-}" ]; then
      echo "[job] checkpointed: requeueing $job_label; the same run resumes" >&2
      # Refused when the job was cancelled (scancel also sends TERM) or SLURM requeues it itself.
      scontrol requeue "$job_label" || { echo "[job] not requeued (see above)" >&2; exit "$rc"; }
      exit 0
    fi
    echo "[job] checkpointed (exit @REQUEUE@): run the same command again to resume" >&2
  fi
  exit "$rc"
}"""
