#!/usr/bin/env bash
# slurm/local_cluster.sh start [--nodes N]|stop [--purge]|status
#
# A real SLURM cluster on this Debian/Ubuntu workstation, for trying the job files in
# slurm/ and for the tests (tests/test_slurm_*.py). Run as root. No systemd needed:
# every daemon is started by hand and stopped by its pid file.
#
#   start    install what is missing (munge, slurmctld, slurmd, slurm-client, slurmdbd,
#            mariadb-server; apt-get), write /etc/slurm/slurm.conf + slurmdbd.conf, start
#            munged, mariadbd, slurmdbd, slurmctld, slurmd, and wait until the node is
#            idle. Idempotent: running it again while the cluster is up changes nothing.
#   start --nodes N   (N = 2..8)
#            the same single node (partition debug, the default), plus N nodes slr-n1 ..
#            slr-nN in partition `multi`: one slurmd each, in its own network namespace
#            (address <net>.11, <net>.12, ... on the bridge slr-br0, whose host side is
#            <net>.1) under its own host name (UTS namespace). munge, MariaDB, slurmdbd and
#            slurmctld stay on the host; jobs that cross nodes talk over the bridge only.
#            The nodes share this machine's CPUs and memory (each declares all of them).
#            Idempotent too; `start` without --nodes goes back to the single node.
#   stop     cancel every job, stop the daemons this script started (never by name),
#            remove the namespaces and the bridge of --nodes.
#            --purge also deletes the state directory (job state, logs, accounting DB).
#   status   print the daemons and `sinfo`; exit 0 when every node accepts jobs.
#
# Settings (environment):
#   SLR_SLURM_DIR        state, logs, pid files, database   (default /var/tmp/slr-slurm)
#   SLR_SLURM_PARTITION  partition name                      (default debug)
#   SLR_SLURM_TIMEOUT    seconds to wait for each daemon     (default 90)
#   SLR_SLURM_NET        the private /24 of --nodes, as its first three numbers (default 10.77.0)
#
# Why accounting (slurmdbd + MariaDB) is always on: without it `sacct` fails, and
# submitit cannot learn that a job was killed from outside Python (scancel, time
# limit, OOM), so its result() waits forever.
set -euo pipefail

DIR=${SLR_SLURM_DIR:-/var/tmp/slr-slurm}
PARTITION=${SLR_SLURM_PARTITION:-debug}
TIMEOUT=${SLR_SLURM_TIMEOUT:-90}
NET=${SLR_SLURM_NET:-10.77.0}
CONF=/etc/slurm/slurm.conf
DBDCONF=/etc/slurm/slurmdbd.conf
DBSOCK=/run/mysqld/mysqld.sock
BRIDGE=slr-br0
MULTI=multi        # the partition of the namespaced nodes
NODE_TIMEOUT=20    # their SlurmdTimeout (s): a lost node ends its jobs this soon (SLURM's default: 300)
NODES=1            # start --nodes N; `status` and `stop` read it from $DIR/nodes
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
  [ "$NODES" -gt 1 ] && pkgs+=(iproute2)   # ip netns, veth, bridge
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
  local host topo mem tmp ctl=127.0.0.1 dfile=slurmd spool=d i
  host=$(hostname -s)
  # Several slurmd on one machine: a spool, pid and log file each (%n: the node's name), and
  # a controller address the namespaces reach (their 127.0.0.1 is their own loopback).
  [ "$NODES" -gt 1 ] && ctl=$NET.1 dfile=slurmd-%n spool=d-%n
  # slurmd refuses a node whose declared CPU layout differs from what it detects,
  # so take the layout from `slurmd -C`; RealMemory must not exceed what it finds.
  topo=$(slurmd -C | head -n1 | grep -o 'CPUs=.*ThreadsPerCore=[0-9]*')
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  tmp=$(mktemp)
  cat >"$tmp" <<EOF
# written by slurm/local_cluster.sh: a single-node test cluster$([ "$NODES" = 1 ] || echo ", and $NODES more nodes in network namespaces")
ClusterName=slrlocal
SlurmctldHost=$host($ctl)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/$spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/$dfile.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/$dfile.log
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
  if [ "$NODES" -gt 1 ]; then
    {
      echo "# A node whose slurmd stays silent this long is DOWN and its jobs end (NODE_FAIL; --requeue ones requeue)."
      echo "SlurmdTimeout=$NODE_TIMEOUT"
      for i in $(seq "$NODES"); do
        echo "NodeName=$(node_name "$i") NodeAddr=$(node_addr "$i") $topo RealMemory=$mem State=UNKNOWN"
      done
      echo "PartitionName=$MULTI Nodes=$(node_list) Default=NO MaxTime=INFINITE State=UP"
    } >>"$tmp"
  fi
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

node_idle() {  # node_idle [NODE]: the node (default: this machine's) accepts jobs
  local st node=${1:-$(hostname -s)}
  st=$(timeout 5 sinfo -h -n "$node" -o %T 2>/dev/null) || return 1
  case "$st" in
    idle | mixed | allocated | completing) return 0 ;;
    # A node left drained/down by an earlier unclean stop (or a lost node of --nodes): put it back.
    drain* | down* | fail*) scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true ;;
  esac
  return 1
}

all_idle() {
  local i
  node_idle || return 1
  [ "$NODES" -gt 1 ] || return 0
  for i in $(seq "$NODES"); do node_idle "$(node_name "$i")" || return 1; done
}

# -- the namespaced nodes of --nodes N

node_name() { echo "slr-n$1"; }              # its network namespace and its host name
node_addr() { echo "$NET.$((10 + $1))"; }
node_list() { local i out=; for i in $(seq "$NODES"); do out+=${out:+,}$(node_name "$i"); done; echo "$out"; }
our_namespaces() { { ip netns list 2>/dev/null || true; } | awk '{print $1}' | grep -E '^slr-n[0-9]+$' || true; }

net_up() {
  local i j ns host
  host=$(hostname -s)
  command -v ip >/dev/null || fail "no 'ip' command (iproute2)"
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    if ip -4 -o addr show | grep -q " inet $NET\\."; then
      fail "$NET.0/24 is already in use here ($(ip -4 -o addr show | grep " inet $NET\\." | awk '{print $2, $4}' | head -n1)); pick another: SLR_SLURM_NET=10.78.0"
    fi
    { ip link add "$BRIDGE" type bridge && ip addr add "$NET.1/24" dev "$BRIDGE" && ip link set "$BRIDGE" up; } ||
      fail "cannot create the bridge $BRIDGE (ip link add $BRIDGE type bridge): run as root with CAP_NET_ADMIN"
  fi
  for i in $(seq "$NODES"); do
    ns=$(node_name "$i")
    our_namespaces | grep -qx "$ns" || ip netns add "$ns" || fail "cannot create the network namespace $ns (ip netns add)"
    if ! ip link show "slr-v$i" >/dev/null 2>&1; then
      { ip link add "slr-v$i" type veth peer name eth0 netns "$ns" && ip link set "slr-v$i" master "$BRIDGE" &&
        ip link set "slr-v$i" up && ip -n "$ns" addr add "$(node_addr "$i")/24" dev eth0 &&
        ip -n "$ns" link set eth0 up && ip -n "$ns" link set lo up; } || fail "cannot connect $ns to $BRIDGE (veth slr-v$i)"
    fi
    # Every node and the controller by name, inside the namespace (start_node mounts it over /etc/hosts,
    # as `ip netns exec` does too).
    mkdir -p "/etc/netns/$ns"
    {
      echo "127.0.0.1 localhost"
      echo "$NET.1 $host"
      for j in $(seq "$NODES"); do echo "$(node_addr "$j") $(node_name "$j")"; done
    } >"/etc/netns/$ns/hosts"
  done
}

net_down() {
  local ns pid link
  for ns in $(our_namespaces); do
    # Whatever a job left behind in the namespace (its jobs were cancelled first): by pid, never by name.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "/etc/netns/$ns"
  done
  for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E '^slr-v[0-9]+$' || true); do
    ip link del "$link" 2>/dev/null || true
  done
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE" && say "removed the namespaces and $BRIDGE"; fi
  return 0
}

start_node() {  # start_node I: the slurmd of node I, in its namespace, under its own host name
  local name pf
  name=$(node_name "$1")
  pf=$DIR/run/slurmd-$name.pid
  mkdir -p "$DIR/spool/d-$name"
  if ! running "$pf" slurmd || [ "$CONF_CHANGED" = 1 ]; then
    clear_stale "$pf" slurmd
    # nsenter, not `ip netns exec`: that mounts a fresh /sys, without the cgroup tree slurmd needs.
    # A private mount namespace puts the nodes' host names over /etc/hosts for this node only.
    nsenter --net="/run/netns/$name" unshare --uts --mount --propagation private \
      sh -c "hostname $name && mount --bind /etc/netns/$name/hosts /etc/hosts && exec slurmd -N $name" 9>&- ||
      fail "the slurmd of $name did not start (log: $DIR/log/slurmd-$name.log)"
  fi
}

stop_slurmds() {
  local pf
  for pf in "$DIR"/run/slurmd.pid "$DIR"/run/slurmd-*.pid; do
    if [ -e "$pf" ]; then stop_one "$pf" slurmd; fi
  done
  return 0
}

slurmd_pidfile() {  # the pid file of this machine's own slurmd
  if [ "$NODES" -gt 1 ]; then echo "$DIR/run/slurmd-$(hostname -s).pid"; else echo "$DIR/run/slurmd.pid"; fi
}

start() {
  [ "$(id -u)" = 0 ] || fail "run as root (it installs packages and starts system daemons)"
  command -v apt-get >/dev/null && command -v dpkg-query >/dev/null ||
    fail "needs a Debian or Ubuntu machine (apt-get, dpkg); on a real cluster just use sbatch"
  mkdir -p "$DIR"/{run,log,spool/ctld,spool/d}
  install_missing
  start_munge
  local before dpid i t
  before=$(cat "$DIR/nodes" 2>/dev/null || echo 1)
  if [ "$before" != "$NODES" ]; then
    # Another layout: every slurmd goes (their pid files move), the namespaces too when back to one node.
    say "switching from --nodes $before to --nodes $NODES"
    stop_slurmds
    [ "$NODES" = 1 ] && net_down
  fi
  [ "$NODES" -gt 1 ] && net_up
  echo "$NODES" >"$DIR/nodes"
  write_configs
  start_accounting
  if ! running "$DIR/run/slurmctld.pid" slurmctld || [ "$CONF_CHANGED" = 1 ]; then
    clear_stale "$DIR/run/slurmctld.pid" slurmctld
    slurmctld 9>&- || fail "slurmctld did not start"
  fi
  poll slurmctld "$DIR/run/slurmctld.pid" slurmctld bash -c 'scontrol ping | grep -q UP'
  dpid=$(slurmd_pidfile)
  mkdir -p "$DIR/spool/d-$(hostname -s)"
  if ! running "$dpid" slurmd || [ "$CONF_CHANGED" = 1 ]; then
    clear_stale "$dpid" slurmd
    slurmd 9>&- || fail "slurmd did not start"
  fi
  if [ "$NODES" -gt 1 ]; then for i in $(seq "$NODES"); do start_node "$i"; done; fi
  t=$(date +%s)
  until all_idle; do
    (($(date +%s) - t < TIMEOUT)) || fail "node not idle after ${TIMEOUT}s: $(sinfo -h -N -o '%N %T %E' 2>&1 | paste -sd ';')"
    if (($(date +%s) - t >= 2)); then
      running "$dpid" slurmd || fail "slurmd died while starting"
      for i in $(seq "$NODES"); do
        [ "$NODES" = 1 ] || running "$DIR/run/slurmd-$(node_name "$i").pid" slurmd ||
          fail "the slurmd of $(node_name "$i") died while starting"
      done
    fi
    sleep 0.2
  done
  say "ready: $(sinfo -h -o 'partition %P, %D node(s) %N, %c cpus, %m MB, %T' | paste -sd ';' | sed 's/;/; /g')"
  say "jobs that fit this node: sbatch slurm/local/<job>.slurm (from slurm/local.toml), or python main/submit.py --fit slurm/<job>.slurm"
  if [ "$NODES" -gt 1 ]; then
    say "jobs over several nodes: partition $MULTI (slurm/local_multi.toml, docs/multi_node.md)"
  fi
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
  NODES=$(cat "$DIR/nodes" 2>/dev/null || echo 1)
  if running "$DIR/run/slurmctld.pid" slurmctld; then
    jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
      say "cancelling jobs $jobs"
      # shellcheck disable=SC2086  # one word per job id
      scancel $jobs 2>/dev/null || true
      for i in $(seq 100); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.1; done
    fi
  fi
  stop_slurmds
  stop_one "$DIR/run/slurmctld.pid" slurmctld
  stop_one "$DIR/run/slurmdbd.pid" slurmdbd
  stop_one "$DIR/mysql/mariadbd.pid" mariadbd
  stop_one "$DIR/run/munged.pid" munged   # only when start launched it
  net_down
  rm -f "$DIR/nodes"
  if [ "${1:-}" = --purge ]; then rm -rf "$DIR"; say "removed $DIR"; fi
}

status() {
  local name pf up=0 i
  NODES=$(cat "$DIR/nodes" 2>/dev/null || echo 1)
  for name in munged mariadbd slurmdbd slurmctld slurmd; do
    pf=$DIR/run/$name.pid
    [ $name = mariadbd ] && pf=$DIR/mysql/mariadbd.pid
    [ $name = slurmd ] && pf=$(slurmd_pidfile)
    if running "$pf" "$name"; then echo "$name: running ($(tr -dc 0-9 <"$pf"))"; else echo "$name: not started here"; fi
  done
  if [ "$NODES" -gt 1 ]; then
    for i in $(seq "$NODES"); do
      pf=$DIR/run/slurmd-$(node_name "$i").pid
      if running "$pf" slurmd; then echo "slurmd of $(node_name "$i") ($(node_addr "$i")): running ($(tr -dc 0-9 <"$pf"))"
      else echo "slurmd of $(node_name "$i"): not running"; fi
    done
  fi
  if command -v sinfo >/dev/null && timeout 5 sinfo -h -o '%P %a %D %T %N' 2>/dev/null; then
    all_idle && up=1
  fi
  [ $up = 1 ] && { echo "cluster: accepting jobs$([ "$NODES" = 1 ] || echo " (1 + $NODES nodes)")"; return 0; }
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

usage() { echo "usage: $0 start [--nodes N]|stop [--purge]|status" >&2; exit 2; }

case "${1:-}" in
  start)
    case "${2:-}" in
      "") ;;
      --nodes) NODES=${3:-} ;;
      --nodes=*) NODES=${2#--nodes=} ;;
      *) usage ;;
    esac
    [[ "$NODES" =~ ^[1-8]$ ]] || { echo "error: --nodes expected a number 1..8, received '$NODES'" >&2; exit 2; }
    lock; start ;;
  stop) lock; stop "${2:-}" ;;
  status) status ;;
  *) usage ;;
esac
