#!/usr/bin/env bash
# slurm/local_cluster.sh start|stop [--purge]|status
#
# A real single-node SLURM cluster on this Debian/Ubuntu workstation, for trying the
# job files in slurm/ and for the tests (tests/test_slurm_cluster.py). Run as root.
# No systemd needed: every daemon is started by hand and stopped by its pid file.
#
#   start    install what is missing (munge, slurmctld, slurmd, slurm-client, slurmdbd,
#            mariadb-server; apt-get), write /etc/slurm/slurm.conf + slurmdbd.conf, start
#            munged, mariadbd, slurmdbd, slurmctld, slurmd, and wait until the node is
#            idle. Idempotent: running it again while the cluster is up changes nothing.
#   stop     cancel every job, stop the daemons this script started (never by name).
#            --purge also deletes the state directory (job state, logs, accounting DB).
#   status   print the daemons and `sinfo`; exit 0 when the node accepts jobs.
#
# Settings (environment):
#   SLR_SLURM_DIR        state, logs, pid files, database   (default /var/tmp/slr-slurm)
#   SLR_SLURM_PARTITION  partition name                      (default debug)
#   SLR_SLURM_TIMEOUT    seconds to wait for each daemon     (default 90)
#
# Why accounting (slurmdbd + MariaDB) is always on: without it `sacct` fails, and
# submitit cannot learn that a job was killed from outside Python (scancel, time
# limit, OOM), so its result() waits forever.
set -euo pipefail

DIR=${SLR_SLURM_DIR:-/var/tmp/slr-slurm}
PARTITION=${SLR_SLURM_PARTITION:-debug}
TIMEOUT=${SLR_SLURM_TIMEOUT:-90}
CONF=/etc/slurm/slurm.conf
DBDCONF=/etc/slurm/slurmdbd.conf
DBSOCK=/run/mysqld/mysqld.sock
T0=$(date +%s)

say() { echo "[local-slurm +$(($(date +%s) - T0))s] $*" >&2; }
fail() {
  say "error: $*"
  for f in "$DIR"/log/*.log; do
    [ -s "$f" ] && { echo "--- tail of $f" >&2; tail -n 12 "$f" >&2; }
  done
  exit 1
}

# running PIDFILE NAME: the pid file names a live process called NAME. Zombies count
# as dead (in a container PID 1 may reap late), and checking the name guards
# against a recycled pid.
running() {
  local pid state
  [ -s "$1" ] || return 1
  pid=$(tr -dc 0-9 <"$1") && [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  state=$(sed 's/^.*) //' "/proc/$pid/stat" | cut -d' ' -f1)
  [ "$state" != Z ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

# clear_stale PIDFILE NAME: drop a pid file whose daemon is gone (kill -9, reboot), so
# that poll sees the new daemon's file, not the dead one's.
clear_stale() { running "$1" "$2" || rm -f "$1"; }

# poll WHAT PIDFILE NAME CMD...: retry CMD until it succeeds; give up after TIMEOUT,
# or as soon as the daemon behind PIDFILE has died (PIDFILE "" = no daemon to watch).
poll() {
  local what=$1 pf=$2 name=$3 t=$(date +%s)
  shift 3
  until timeout 5 "$@" >/dev/null 2>&1; do
    (($(date +%s) - t < TIMEOUT)) || fail "no $what after ${TIMEOUT}s"
    # A daemon writes its pid file only once it is up (MariaDB after InnoDB starts:
    # seconds on a busy machine), so a missing file means "not yet", never "died".
    if [ -s "$pf" ] && (($(date +%s) - t >= 2)) && ! running "$pf" "$name"; then
      fail "$name died while starting"
    fi
    sleep 0.2
  done
}

install_missing() {
  local pkgs=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server) missing=() p policy=0
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} = 0 ] && return 0
  say "installing ${missing[*]} (apt-get)"
  # Without systemd the packages' postinst scripts would start daemons through
  # init.d (MariaDB on its default datadir): forbid that for the install only.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && policy=1
  fi
  local rc=0
  { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$DIR/log/apt.log" 2>&1 || rc=$?
  [ $policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ $rc = 0 ] || { tail -n 20 "$DIR/log/apt.log" >&2; fail "apt-get install ${missing[*]} failed (log: $DIR/log/apt.log)"; }
  say "installed"
}

start_munge() {
  [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
  install -d -o munge -g munge -m 0755 /run/munge   # /run is empty after a reboot
  runuser -u munge -- /usr/sbin/munged 9>&- || fail "munged did not start (see /var/log/munge/munged.log)"
  poll munged "" "" bash -c 'munge -n | unmunge'
  cp /run/munge/munged.pid "$DIR/run/munged.pid"   # ours: stop may end it
  say "munged up"
}

# install_if_changed SRC DEST MODE: returns 0 when DEST was (re)written.
install_if_changed() {
  if cmp -s "$1" "$2"; then rm -f "$1"; return 1; fi
  install -D -m "$3" "$1" "$2" && rm -f "$1"
}

write_configs() {
  local host topo mem tmp
  host=$(hostname -s)
  # slurmd refuses a node whose declared CPU layout differs from what it detects,
  # so take the layout from `slurmd -C`; RealMemory must not exceed what it finds.
  topo=$(slurmd -C | head -n1 | grep -o 'CPUs=.*ThreadsPerCore=[0-9]*')
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  tmp=$(mktemp)
  cat >"$tmp" <<EOF
# written by slurm/local_cluster.sh: a single-node test cluster
ClusterName=slrlocal
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default a job that gives no --mem is granted the whole node.
DefMemPerCPU=512
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# Reject at submit what can never run, instead of leaving it pending forever.
EnforcePartLimits=ALL
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
MinJobAge=300
KillWait=5
InactiveLimit=0
Waittime=0
NodeName=$host NodeAddr=127.0.0.1 $topo RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  CONF_CHANGED=0
  install_if_changed "$tmp" "$CONF" 0644 && { CONF_CHANGED=1; say "wrote $CONF"; }
  tmp=$(mktemp)
  cat >"$tmp" <<EOF
# written by slurm/local_cluster.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slr_slurm_acct
EOF
  DBD_CHANGED=0
  install_if_changed "$tmp" "$DBDCONF" 0600 && DBD_CHANGED=1 || true
}

start_accounting() {
  install -d -o mysql -g mysql -m 0750 "$DIR/mysql"
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  if [ ! -d "$DIR/mysql/mysql" ]; then
    mariadb-install-db --no-defaults --user=mysql --datadir="$DIR/mysql" --skip-test-db \
      --auth-root-authentication-method=socket >"$DIR/log/mariadb-install.log" 2>&1 || fail "mariadb-install-db failed"
  fi
  if ! running "$DIR/mysql/mariadbd.pid" mariadbd; then
    mariadb-admin --socket=$DBSOCK ping >/dev/null 2>&1 &&
      fail "another MariaDB already serves $DBSOCK; stop it first (this script only stops what it started)"
    # Its error log must be writable by the mysql user: fail() shows its tail.
    [ -e "$DIR/log/mariadb.log" ] || install -o mysql -g mysql -m 0640 /dev/null "$DIR/log/mariadb.log"
    # Only a socket (root by unix-socket auth): nothing listens on the network.
    setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DIR/mysql" --socket=$DBSOCK \
      --pid-file="$DIR/mysql/mariadbd.pid" --skip-networking --log-error="$DIR/log/mariadb.log" \
      --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 9>&- &
    # setsid execs mariadbd in place, so $! is its pid: watched from launch, before its pid file exists.
    echo $! >"$DIR/run/mariadbd.launched"
    poll mariadbd "$DIR/run/mariadbd.launched" mariadbd mariadb-admin --socket=$DBSOCK ping
    rm -f "$DIR/run/mariadbd.launched"
    say "mariadbd up"
  fi
  if ! running "$DIR/run/slurmdbd.pid" slurmdbd || [ "$DBD_CHANGED" = 1 ]; then
    clear_stale "$DIR/run/slurmdbd.pid" slurmdbd
    slurmdbd 9>&- || fail "slurmdbd did not start"   # a new one replaces a running one
  fi
  poll slurmdbd "$DIR/run/slurmdbd.pid" slurmdbd sacctmgr -n list cluster
  say "slurmdbd up"
}

node_idle() {
  local st
  st=$(timeout 5 sinfo -h -n "$(hostname -s)" -o %T 2>/dev/null) || return 1
  case "$st" in
    idle | mixed | allocated | completing) return 0 ;;
    # A node left drained/down by an earlier unclean stop: put it back.
    drain* | down* | fail*) scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true ;;
  esac
  return 1
}

start() {
  [ "$(id -u)" = 0 ] || fail "run as root (it installs packages and starts system daemons)"
  command -v apt-get >/dev/null && command -v dpkg-query >/dev/null ||
    fail "needs a Debian or Ubuntu machine (apt-get, dpkg); on a real cluster just use sbatch"
  mkdir -p "$DIR"/{run,log,spool/ctld,spool/d}
  install_missing
  start_munge
  write_configs
  start_accounting
  if ! running "$DIR/run/slurmctld.pid" slurmctld || [ "$CONF_CHANGED" = 1 ]; then
    clear_stale "$DIR/run/slurmctld.pid" slurmctld
    slurmctld 9>&- || fail "slurmctld did not start"
  fi
  poll slurmctld "$DIR/run/slurmctld.pid" slurmctld bash -c 'scontrol ping | grep -q UP'
  if ! running "$DIR/run/slurmd.pid" slurmd || [ "$CONF_CHANGED" = 1 ]; then
    clear_stale "$DIR/run/slurmd.pid" slurmd
    slurmd 9>&- || fail "slurmd did not start"
  fi
  local t=$(date +%s)
  until node_idle; do
    (($(date +%s) - t < TIMEOUT)) || fail "node not idle after ${TIMEOUT}s: $(sinfo -h -N -o '%N %T %E' 2>&1)"
    (($(date +%s) - t < 2)) || running "$DIR/run/slurmd.pid" slurmd || fail "slurmd died while starting"
    sleep 0.2
  done
  say "ready: $(sinfo -h -o 'partition %P, %D node %N, %c cpus, %m MB, %T')"
  say "jobs that fit this node: sbatch slurm/local/<job>.slurm (from slurm/local.toml), or python main/submit.py --fit slurm/<job>.slurm"
}

stop_one() {  # stop_one PIDFILE NAME
  local pid i
  if ! running "$1" "$2"; then rm -f "$1"; return 0; fi
  pid=$(tr -dc 0-9 <"$1")
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 100); do running "$1" "$2" || break; sleep 0.1; done
  if running "$1" "$2"; then say "$2 ($pid) ignores SIGTERM: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$1"
  say "stopped $2 ($pid)"
}

stop() {
  local jobs i
  if running "$DIR/run/slurmctld.pid" slurmctld; then
    jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
      say "cancelling jobs $jobs"
      # shellcheck disable=SC2086  # one word per job id
      scancel $jobs 2>/dev/null || true
      for i in $(seq 100); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.1; done
    fi
  fi
  stop_one "$DIR/run/slurmd.pid" slurmd
  stop_one "$DIR/run/slurmctld.pid" slurmctld
  stop_one "$DIR/run/slurmdbd.pid" slurmdbd
  stop_one "$DIR/mysql/mariadbd.pid" mariadbd
  stop_one "$DIR/run/munged.pid" munged   # only when start launched it
  if [ "${1:-}" = --purge ]; then rm -rf "$DIR"; say "removed $DIR"; fi
}

status() {
  local name pf up=0
  for name in munged mariadbd slurmdbd slurmctld slurmd; do
    pf=$DIR/run/$name.pid
    [ $name = mariadbd ] && pf=$DIR/mysql/mariadbd.pid
    if running "$pf" "$name"; then echo "$name: running ($(tr -dc 0-9 <"$pf"))"; else echo "$name: not started here"; fi
  done
  if command -v sinfo >/dev/null && timeout 5 sinfo -h -o '%P %a %D %T %N' 2>/dev/null; then
    node_idle && up=1
  fi
  [ $up = 1 ] && { echo "cluster: accepting jobs"; return 0; }
  echo "cluster: down (start it: slurm/local_cluster.sh start)"
  return 1
}

# One start or stop at a time: two at once (two terminals, two test processes)
# would each find munged or MariaDB half started and start a second one.
lock() {
  mkdir -p "$DIR"
  exec 9>"$DIR/.lock"
  flock -w $((TIMEOUT * 3)) 9 || fail "another slurm/local_cluster.sh start or stop still runs (lock $DIR/.lock)"
  # The daemons are started without fd 9 (9>&-): a daemon holding it would hold the lock for good.
}

case "${1:-}" in
  start) lock; start ;;
  stop) lock; stop "${2:-}" ;;
  status) status ;;
  *) echo "usage: $0 start|stop [--purge]|status" >&2; exit 2 ;;
esac
