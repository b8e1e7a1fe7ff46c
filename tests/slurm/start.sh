#!/usr/bin/env bash
# tests/slurm/start.sh - a real single-node SLURM cluster on this machine (localhost), with accounting.
#   With SPLITSWEEP_SLURM_NODES=N (N >= 2): N nodes, each in its own network namespace (see below).
#
#   munged -> mariadbd -> slurmdbd -> slurmctld -> slurmd, all as root, every file under one state dir.
#   No systemd and no cgroups needed (proctrack/linuxproc, task/none).  Debian 12 / Slurm 22.05 tested;
#   any Debian or Ubuntu with apt should do.  See tests/slurm/README.md.
#
# Usage:  sudo tests/slurm/start.sh [--fresh] [--restart] [--no-install] [--no-smoke]
#         source "${SPLITSWEEP_SLURM_DIR:-/tmp/splitsweep-slurm}/env.sh"   # then sbatch/srun/submitit/hydra
#         sudo tests/slurm/stop.sh [--purge]
#
#   (no option)   start the cluster, or reuse it if it already runs healthy with the same configuration
#   --restart     stop and start again even if it runs
#   --fresh       also wipe the controller state and the accounting database (job ids restart at 1)
#   --no-install  fail instead of installing missing Debian packages
#   --no-smoke    skip the final smoke job (sbatch --wrap true, then seen by sacct)
#
# Knobs (environment; the SLURM_* namespace is left to Slurm itself, which reads many SLURM_* variables):
#   SPLITSWEEP_SLURM_DIR        state dir: config, logs, sockets, spool, database   [/tmp/splitsweep-slurm]
#   SPLITSWEEP_SLURM_PARTITION  partition name                                       [debug]
#   SPLITSWEEP_SLURM_CPUS       CPUs advertised for the node (may exceed nproc)      [nproc --all, at least 2]
#   SPLITSWEEP_SLURM_MEM_MB     RealMemory of the node in MB                         [as `slurmd -C` reports]
#   SPLITSWEEP_SLURM_PORT_BASE  slurmctld=BASE, slurmd=BASE+1, slurmdbd=BASE+2, mariadb=BASE+3   [16817]
#   SPLITSWEEP_SLURM_CRED_EXPIRE job-credential lifetime in s; also how long a requeued job is held [10]
#   SPLITSWEEP_SLURM_NODES      number of nodes                                      [1]
#   SPLITSWEEP_SLURM_SUBNET     first three octets of the nodes' /24 when NODES >= 2 [10.213.0]
#
# NODES >= 2: node1..nodeN, node i in network namespace splitsweep-BASE-node<i> at SUBNET.i (a veth pair
# into bridge ssbrBASE, which holds SUBNET.254 in the root namespace, where slurmctld, slurmdbd, mariadb
# and munged run).  Each slurmd runs in its namespace with its own hostname (a UTS namespace: node<i>) and
# an /etc/hosts naming every node (a private bind mount of etc/hosts), so its jobs see a node as on a real
# cluster.  Traffic stays on this machine (the namespaces have no route out).  stop.sh removes them.
#
# The last line of stdout is machine-readable: `SPLITSWEEP_SLURM_STARTED=1` when this call started the
# daemons, `=0` when a healthy cluster was reused.  Exit status 2 means "cannot run here" (not root, no
# apt-get, not Linux, one of its ports taken by another program); 1 means a real failure (the tails of the
# logs are printed).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
D=${SPLITSWEEP_SLURM_DIR:-/tmp/splitsweep-slurm}
PART=${SPLITSWEEP_SLURM_PARTITION:-debug}
PORT_BASE=${SPLITSWEEP_SLURM_PORT_BASE:-16817}
CRED_EXPIRE=${SPLITSWEEP_SLURM_CRED_EXPIRE:-10}
CLUSTER=splitsweep
CTLD_PORT=$PORT_BASE; SLURMD_PORT=$((PORT_BASE + 1)); DBD_PORT=$((PORT_BASE + 2)); DB_PORT=$((PORT_BASE + 3))
PKGS="munge slurm-client slurmctld slurmd slurmdbd mariadb-server"

FRESH=0; RESTART=0; INSTALL=1; SMOKE=1
for a in "$@"; do
  case "$a" in
    --fresh) FRESH=1; RESTART=1 ;;
    --restart) RESTART=1 ;;
    --no-install) INSTALL=0 ;;
    --no-smoke) SMOKE=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "start.sh: unknown option $a (see --help)" >&2; exit 2 ;;
  esac
done

T0=$(date +%s%N)
elapsed() { local ms=$(( ($(date +%s%N) - T0) / 1000000 )); printf '%d.%03d' $((ms / 1000)) $((ms % 1000)); }
log() { printf '[slurm start %7ss] %s\n' "$(elapsed)" "$*"; }
cannot() { echo "start.sh: cannot run here: $*" >&2; exit 2; }
die() {
  log "ERROR: $*" >&2
  for f in "$D"/log/*.log "$D"/log/*.err; do
    [ -s "$f" ] && { echo "---- tail -n 25 $f" >&2; tail -n 25 "$f" >&2; }
  done
  exit 1
}
# wait_for SECONDS WHAT COMMAND...  polls every 0.2 s
wait_for() {
  local t=$1 what=$2; shift 2
  local end=$(( $(date +%s) + t ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || die "timed out after ${t}s waiting for $what"
    sleep 0.2
  done
}

# ------------------------------------------------------------------------------------------- 0. can we?
[ "$(uname -s)" = Linux ] || cannot "needs Linux (on macOS/Windows use a Debian container, see tests/slurm/README.md)"
[ "$(id -u)" = 0 ] || cannot "the daemons must run as root: sudo $0 $*"
mkdir -p "$D"; chmod 755 "$D"
# every daemon below is started with 9>&- : an inherited lock fd would hold the lock forever
exec 9>"$D/.lock"
flock -w 600 9 || { echo "start.sh: another start.sh/stop.sh held $D/.lock for 10 minutes" >&2; exit 1; }

# ------------------------------------------------------------------------------------------- 1. packages
T_INSTALL=0
missing=$( (dpkg-query -W -f='${Package} ${Status}\n' $PKGS 2>/dev/null || true) | awk '$NF == "installed" {ok[$1]=1}
          END {n=split("'"$PKGS"'", p, " "); for (i=1;i<=n;i++) if (!ok[p[i]]) printf " %s", p[i]}')
if [ -n "$missing" ]; then
  [ "$INSTALL" = 1 ] || cannot "missing Debian packages:$missing (run without --no-install, or apt-get install them)"
  command -v apt-get >/dev/null || cannot "missing packages:$missing and no apt-get"
  log "installing:$missing"
  t=$(date +%s%N)
  # Keep the packages' maintainer scripts from starting the stock daemons (systemd or sysv): they would
  # grab the default config, ports and munge key.  Only if no policy exists already, and removed after.
  policy_created=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# temporary, from splitsweep tests/slurm/start.sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d; policy_created=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >"$D/apt.log" 2>&1 || { cat "$D/apt.log" >&2; die "apt-get update failed"; }
  apt-get install -y -qq --no-install-recommends $missing >>"$D/apt.log" 2>&1 \
    || { tail -n 30 "$D/apt.log" >&2; die "apt-get install failed (full log: $D/apt.log)"; }
  if [ -n "$policy_created" ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
  T_INSTALL=$(( ($(date +%s%N) - t) / 1000000 ))
  log "installed in $((T_INSTALL / 1000)).$(printf %03d $((T_INSTALL % 1000)))s ($(dpkg-query -W -f='${Version}' slurmctld))"
fi

# ------------------------------------------------------------------------------------------- 2. config
# nproc --all, and without OMP_*: plain GNU nproc honours OMP_NUM_THREADS / OMP_THREAD_LIMIT (the tests set
# OMP_NUM_THREADS=2), and a different count here would mean a different slurm.conf, so a restart of a
# cluster another session is using.
CPUS=${SPLITSWEEP_SLURM_CPUS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc --all)}
[ "$CPUS" -ge 2 ] || CPUS=2          # the multi-task (2-rank) path must fit on one node
MEM=${SPLITSWEEP_SLURM_MEM_MB:-$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')}
[ -n "$MEM" ] || MEM=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
DEF_MEM_PER_CPU=$(( MEM / CPUS ))
MUNGE_SOCKET=$D/munge/munge.socket

# nodes: `localhost` alone, or node1..nodeN in network namespaces (names derived from the port base, which
# is unique per cluster on a machine)
NODES=${SPLITSWEEP_SLURM_NODES:-1}
case "$NODES" in ''|*[!0-9]*|0) cannot "SPLITSWEEP_SLURM_NODES must be a whole number >= 1 (now '$NODES')" ;; esac
[ "$NODES" -le 250 ] || cannot "SPLITSWEEP_SLURM_NODES must be at most 250 (one /24)"
NODE_CONF="CPUs=$CPUS Sockets=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$MEM State=UNKNOWN"
if [ "$NODES" = 1 ]; then
  NODE_NAMES=localhost; NODELIST=localhost; CTLD_HOST=localhost; SLURMD_FILE=slurmd; SPOOL_D=$D/spool/d
  NODE_LINES="NodeName=localhost NodeAddr=127.0.0.1 $NODE_CONF"
else
  NET=${SPLITSWEEP_SLURM_SUBNET:-10.213.0}
  [[ "$NET" =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || cannot "SPLITSWEEP_SLURM_SUBNET must be three octets like 10.213.0 (now '$NET')"
  NODE_NAMES=$(seq -f 'node%g' 1 "$NODES" | tr '\n' ' '); NODELIST="node[1-$NODES]"
  CTLD_HOST="localhost($NET.254)"; SLURMD_FILE=slurmd-%n; SPOOL_D=$D/spool/d/%n
  NODE_LINES=$(for i in $(seq 1 "$NODES"); do echo "NodeName=node$i NodeAddr=$NET.$i NodeHostname=node$i $NODE_CONF"; done)
  BRIDGE=ssbr$PORT_BASE
  netns() { echo "splitsweep-$PORT_BASE-node$1"; }   # network namespace of node i
  veth() { echo "ssv${PORT_BASE}n$1"; }               # its veth, root-namespace end (at most 15 characters)
fi

mkdir -p "$D"/{etc,munge,spool/ctld,spool/d,log,run,mysql}
chmod 755 "$D/munge" "$D/etc"       # munged insists its socket dir is not writable by others
NEW=$D/etc/slurm.conf.new
cat > "$NEW" <<EOF
# Single-node SLURM cluster for splitsweep, written by tests/slurm/start.sh.  Do not edit: rerun the script.
ClusterName=$CLUSTER
SlurmctldHost=$CTLD_HOST
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job is held before it may run again (default 120 s)
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=$CRED_EXPIRE
StateSaveLocation=$D/spool/ctld
SlurmdSpoolDir=$SPOOL_D
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/$SLURMD_FILE.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/$SLURMD_FILE.log
SlurmctldDebug=info
SlurmdDebug=info
# no systemd and no usable cgroups needed
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
# accounting through slurmdbd: sacct is how submitit learns that a job was cancelled or killed
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$MUNGE_SOCKET
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
# cores and memory are consumable, as on a real cluster; a job without --mem gets DefMemPerCPU per CPU
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEF_MEM_PER_CPU
# reject impossible requests at submission instead of leaving them pending forever
EnforcePartLimits=ALL
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
MailProg=/bin/true
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
Waittime=0
# trust the node line below instead of probing the hardware (CPUs may exceed nproc)
SlurmdParameters=config_overrides
$NODE_LINES
PartitionName=$PART Nodes=$NODELIST Default=YES MaxTime=INFINITE State=UP
EOF
[ "$NODES" = 1 ] || sed -i "1s/^# Single-node/# $NODES-node/" "$NEW"

# is the very same cluster already up?  (all daemons alive, controller answers, node usable)
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
pid_ok() { local p; p=$(tr -dc 0-9 2>/dev/null < "$1") && [ -n "$p" ] && alive "$p" && [ "$(cat /proc/$p/comm)" = "$2" ]; }
export SLURM_CONF=$D/etc/slurm.conf
slurmd_pidfile() { [ "$NODES" = 1 ] && echo "$D/run/slurmd.pid" || echo "$D/run/slurmd-$1.pid"; }
nodes_up() {       # every node usable (idle, or running jobs)
  [ "$(sinfo -h -N -o %T 2>/dev/null | grep -Ec '^(idle|mixed|allocated|completing)')" = "$NODES" ]
}
healthy() {
  local n
  for n in $NODE_NAMES; do pid_ok "$(slurmd_pidfile "$n")" slurmd || return 1; done
  pid_ok "$D/run/munged.pid" munged && pid_ok "$D/run/mariadbd.pid" mariadbd && pid_ok "$D/run/slurmdbd.pid" slurmdbd \
    && pid_ok "$D/run/slurmctld.pid" slurmctld \
    && scontrol ping 2>/dev/null | grep -q UP && nodes_up
}
node_summary() { sinfo -h -N -o '%N cpus=%c mem=%mMB %T' 2>/dev/null | paste -sd ';' | sed 's/;/; /g'; }
if [ "$RESTART" = 0 ] && [ -f "$SLURM_CONF" ] && cmp -s "$NEW" "$SLURM_CONF" && healthy; then
  rm -f "$NEW"
  log "already running ($SLURM_CONF); partition $PART, node: $(node_summary)"
  echo "SPLITSWEEP_SLURM_STARTED=0"
  exit 0
fi

# ------------------------------------------------------------------------------------------- 3. start
T_START0=$(date +%s%N)
if [ -f "$SLURM_CONF" ] || [ -d "$D/run" ]; then
  "$HERE/stop.sh" --quiet --locked || true      # leftovers of an earlier run, by PID file
fi
for port in $CTLD_PORT $SLURMD_PORT $DBD_PORT $DB_PORT; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    cannot "port $port (127.0.0.1) is in use by another program; choose other ports with" \
      "SPLITSWEEP_SLURM_PORT_BASE=N (the cluster uses N..N+3; now $PORT_BASE)"
  fi
done
# Job ids come from the controller state, and sacct matches jobs by id: wipe both or neither, so that
# an id never names two jobs in the accounting database (submitit would read the wrong job's state).
if [ "$FRESH" = 1 ] || [ ! -s "$D/spool/ctld/job_state" ]; then
  [ "$FRESH" = 1 ] && log "fresh start: wiping controller state and accounting database"
  rm -rf "$D/spool/ctld" "$D/mysql"
fi
rm -rf "$D/spool/d" "$D/log"
mkdir -p "$D"/{spool/ctld,spool/d,log,run,mysql}
mv -f "$NEW" "$SLURM_CONF"

if [ "$NODES" -ge 2 ]; then
  command -v ip >/dev/null && command -v unshare >/dev/null \
    && command -v nsenter >/dev/null \
    || cannot "SPLITSWEEP_SLURM_NODES=$NODES needs ip (iproute2), unshare and nsenter (util-linux)"
  # The network: bridge BRIDGE ($NET.254, root namespace) and one namespace per node, joined by a veth pair.
  # etc/network.sh names everything made here (written first: stop.sh removes what it names, even after a
  # start that failed half-way).
  ip route show | grep -v " dev $BRIDGE " | grep -q "^$NET\.0/24 " \
    && cannot "the subnet $NET.0/24 is in use on this machine; choose another with SPLITSWEEP_SLURM_SUBNET"
  { echo "# written by tests/slurm/start.sh: what stop.sh removes"
    echo "BRIDGE=$BRIDGE"
    echo "NETNS=\"$(for i in $(seq 1 "$NODES"); do printf '%s ' "$(netns "$i")"; done)\""
    echo "VETHS=\"$(for i in $(seq 1 "$NODES"); do printf '%s ' "$(veth "$i")"; done)\""
  } > "$D/etc/network.sh"
  "$HERE/stop.sh" --quiet --locked --network-only    # leftovers of the same names (a killed session)
  ip link add "$BRIDGE" type bridge || die "cannot create the bridge $BRIDGE (ip link add ... type bridge)"
  ip addr add "$NET.254/24" dev "$BRIDGE" && ip link set "$BRIDGE" up || die "cannot bring up $BRIDGE"
  { echo "127.0.0.1 localhost"; echo "$NET.254 controller"
    for i in $(seq 1 "$NODES"); do echo "$NET.$i node$i"; done; } > "$D/etc/hosts"
  chmod 644 "$D/etc/hosts"
  for i in $(seq 1 "$NODES"); do
    ns=$(netns "$i")
    { ip netns add "$ns" && ip -n "$ns" link set lo up \
        && ip link add "$(veth "$i")" type veth peer name eth0 netns "$ns" \
        && ip link set "$(veth "$i")" master "$BRIDGE" up \
        && ip -n "$ns" addr add "$NET.$i/24" dev eth0 && ip -n "$ns" link set eth0 up; } \
      || die "cannot set up network namespace $ns"
  done
  log "network up: bridge $BRIDGE $NET.254, nodes $(for i in $(seq 1 "$NODES"); do printf 'node%s=%s ' "$i" "$NET.$i"; done)"
fi

cat > "$D/etc/slurmdbd.conf" <<EOF
# written by tests/slurm/start.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$D/run/slurmdbd.pid
LogFile=$D/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
chmod 600 "$D/etc/slurmdbd.conf"       # slurmdbd refuses a config others can read
cat > "$D/etc/my.cnf" <<EOF
# mariadb for slurmdbd only, written by tests/slurm/start.sh
[mysqld]
user=root
datadir=$D/mysql
socket=$D/run/mysqld.sock
pid-file=$D/run/mariadbd.pid
log-error=$D/log/mariadbd.err
bind-address=127.0.0.1
port=$DB_PORT
skip-name-resolve
innodb_buffer_pool_size=64M
innodb_log_file_size=16M
innodb_lock_wait_timeout=900
[client]
socket=$D/run/mysqld.sock
port=$DB_PORT
EOF

# munge: a key of our own, a socket of our own (a system munged, if any, is left alone)
[ -s "$D/munge/munge.key" ] || { mungekey -c -k "$D/munge/munge.key" >/dev/null; chmod 600 "$D/munge/munge.key"; }
rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
munged --key-file="$D/munge/munge.key" --socket="$MUNGE_SOCKET" --pid-file="$D/run/munged.pid" \
       --log-file="$D/log/munged.log" --seed-file="$D/munge/munged.seed" 9>&-
wait_for 20 munged bash -c "munge -n -S '$MUNGE_SOCKET' | unmunge -S '$MUNGE_SOCKET'"
log "munged up"

if [ ! -d "$D/mysql/mysql" ]; then
  mariadb-install-db --defaults-file="$D/etc/my.cnf" --auth-root-authentication-method=socket \
      --skip-test-db >"$D/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed (see $D/log/mariadb-install.log)"
fi
setsid /usr/sbin/mariadbd --defaults-file="$D/etc/my.cnf" >"$D/log/mariadbd.out" 2>&1 </dev/null 9>&- &
wait_for 60 mariadbd mariadb-admin --defaults-file="$D/etc/my.cnf" -uroot ping
mariadb --defaults-file="$D/etc/my.cnf" -uroot -e "
  CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';" || die "creating the accounting database failed"
log "mariadbd up"

slurmdbd 9>&-                           # reads slurmdbd.conf next to $SLURM_CONF, daemonizes
wait_for 90 slurmdbd sacctmgr -n -P show cluster
sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true     # no-op when it exists
log "slurmdbd up"

slurmctld 9>&-
wait_for 60 slurmctld bash -c "scontrol ping | grep -q UP"
log "slurmctld up"
if [ "$NODES" = 1 ]; then
  slurmd -N localhost 9>&-
else
  # node i: its network namespace, its own hostname (UTS namespace) and /etc/hosts (private mount).  nsenter,
  # not `ip netns exec`: that remounts /sys, hiding /sys/fs/cgroup, without which slurmd 22.05 will not start.
  for i in $(seq 1 "$NODES"); do
    mkdir -p "$D/spool/d/node$i"
    nsenter --net="/run/netns/$(netns "$i")" unshare --uts --mount --propagation private \
      sh -c 'mount --bind "$1" /etc/hosts && hostname "$2" && exec slurmd -N "$2"' sh "$D/etc/hosts" "node$i" 9>&- \
      || die "slurmd of node$i did not start (see $D/log/slurmd-node$i.log)"
  done
fi
node_ready() {
  local n
  for n in $(sinfo -h -N -t down,drain -o %N 2>/dev/null); do
    scontrol update nodename="$n" state=resume >/dev/null 2>&1 || true
  done
  nodes_up
}
wait_for 60 "the node(s) to become idle" node_ready
log "slurmd up, node: $(node_summary)"

if [ "$SMOKE" = 1 ]; then
  # one job through the scheduler, and through accounting: sacct (what submitit polls) may trail by seconds
  # on several nodes: one task per node through srun, so every slurmd and the network between them are used
  if [ "$NODES" = 1 ]; then SMOKE_ARGS=(-n1 --wrap true); else SMOKE_ARGS=(-N "$NODES" --ntasks-per-node=1 --wrap 'srun true'); fi
  jid=$(cd "$D" && timeout 60 sbatch --parsable --wait -p "$PART" -t 1 --mem=100 -J smoke -o /dev/null "${SMOKE_ARGS[@]}" 9>&-) \
    || die "smoke job 'sbatch ${SMOKE_ARGS[*]}' failed"
  wait_for 60 "accounting to record smoke job $jid" bash -c "sacct -n -X -j $jid -o State | grep -q COMPLETED"
  log "smoke job $jid completed and accounted"
fi

# ------------------------------------------------------------------------------------------- 4. env files
cat > "$D/env.sh" <<EOF
# source me: the client environment of the splitsweep test cluster (written by tests/slurm/start.sh)
export SLURM_CONF=$SLURM_CONF
export SPLITSWEEP_SLURM_DIR=$D
export SPLITSWEEP_SLURM_PARTITION=$PART
EOF
T_START=$(( ($(date +%s%N) - T_START0) / 1000000 ))
cat > "$D/cluster.json" <<EOF
{
  "state_dir": "$D",
  "cluster_name": "$CLUSTER",
  "partition": "$PART",
  "node": "${NODE_NAMES%% *}",
  "nodes": [$(for n in $NODE_NAMES; do printf '"%s",' "$n"; done | sed 's/,$//')],
  "addresses": {$(if [ "$NODES" = 1 ]; then printf '"localhost": "127.0.0.1"'; else
                  for i in $(seq 1 "$NODES"); do printf '"node%s": "%s",' "$i" "$NET.$i"; done | sed 's/,$//'; fi)},
  "network_namespaces": {$(if [ "$NODES" -ge 2 ]; then
                  for i in $(seq 1 "$NODES"); do printf '"node%s": "%s",' "$i" "$(netns "$i")"; done | sed 's/,$//'; fi)},
  "cpus": $CPUS,
  "mem_mb": $MEM,
  "def_mem_per_cpu_mb": $DEF_MEM_PER_CPU,
  "ports": {"slurmctld": $CTLD_PORT, "slurmd": $SLURMD_PORT, "slurmdbd": $DBD_PORT, "mariadb": $DB_PORT},
  "env": {"SLURM_CONF": "$SLURM_CONF"},
  "slurm_version": "$(sinfo -V | awk '{print $2}')",
  "install_ms": $T_INSTALL,
  "start_ms": $T_START
}
EOF
chmod 644 "$D/env.sh" "$D/cluster.json" "$SLURM_CONF"
log "cluster ready in $(elapsed)s (install ${T_INSTALL} ms, start ${T_START} ms).  Use it with:  source $D/env.sh"
echo "SPLITSWEEP_SLURM_STARTED=1"
