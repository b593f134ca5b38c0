"""The bash body of every job file (see :func:`utils.cluster.sbatch.render_sbatch`).

Trusted text written here, never from a profile: profile values reach it
only as the quoted variables ``data_root``, ``raw_root``, ``results_root``,
``subset``, ``venv``, ``conda_env`` and the array ``modules``.
"""

__all__ = ["BODY_ENV", "BODY_LAUNCH", "BODY_ROOT"]

# sbatch runs a *copy* of the job file from its spool directory, so the file's own
# path says nothing about the repo; the job starts in the directory sbatch was
# called from. Submitted from elsewhere, the repo is found through the path sbatch
# was given (scontrol's Command=); the log still goes to <submit dir>/<log_dir>.
BODY_ROOT = r"""# ---- the repo root
if [ -n "${SLURM_JOB_ID:-}" ]; then
  cd "${SLURM_SUBMIT_DIR:-$PWD}"
  if [ ! -f main/make_slurm.py ]; then
    script=$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null | sed -n 's/^ *Command=\([^ ]*\).*/\1/p' | head -n 1)
    [ -z "$script" ] || cd "$(dirname "$script")/.." 2>/dev/null || true
  fi
else
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
fi
if [ ! -f main/make_slurm.py ]; then
  echo "error: expected to run in the SLR Suite repo root, but $PWD is not; submit from it: cd <repo> && sbatch slurm/<job>.slurm" >&2
  exit 2
fi"""

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
# the signal on, and `wait` is repeated until the child is really gone.
BODY_LAUNCH = r"""# ---- run, passing SLURM's signals on; exit @REQUEUE@ = checkpointed, requeue me
echo "[job] ${SLURM_JOB_NAME:-local} ${SLURM_JOB_ID:+job $SLURM_JOB_ID }on $(hostname) at $(date -u +%FT%TZ) (restarts: ${SLURM_RESTART_COUNT:-0})" >&2
child=
forward() {
  echo "[job] got SIG$1: passing it to the command (pid ${child:-none}) so it checkpoints" >&2
  [ -z "$child" ] || kill -s "$1" "$child" 2>/dev/null || true
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM
launch() {
  "$@" &
  child=$!
  local rc
  while :; do
    wait "$child" && rc=0 || rc=$?
    kill -0 "$child" 2>/dev/null || break  # still alive: a signal cut the wait short
  done
  if [ "$rc" = @REQUEUE@ ]; then
    if [ -n "${SLURM_JOB_ID:-}" ]; then
      target=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}
      echo "[job] checkpointed: requeueing ${target:-$SLURM_JOB_ID}; the same run resumes" >&2
      # Refused when the job was cancelled (scancel also sends TERM) or SLURM requeues it itself.
      scontrol requeue "${target:-$SLURM_JOB_ID}" || { echo "[job] not requeued (see above)" >&2; exit "$rc"; }
      exit 0
    fi
    echo "[job] checkpointed (exit @REQUEUE@): run the same command again to resume" >&2
  fi
  exit "$rc"
}"""
