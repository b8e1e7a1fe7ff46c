#!/usr/bin/env bash
# tests/slurm/stop.sh - cancel every job and stop the daemons that tests/slurm/start.sh started.
#
# Usage:  sudo tests/slurm/stop.sh [--purge] [--quiet]
#   --purge   also delete the state dir (config, logs, accounting database, munge key)
#   --quiet   print nothing unless something goes wrong
#
# Daemons are found by the PID files in $SPLITSWEEP_SLURM_DIR/run (default /tmp/splitsweep-slurm/run),
# and a PID is signalled only if /proc says it still is that daemon: nothing else on the machine is touched.
# A multi-node cluster (SPLITSWEEP_SLURM_NODES >= 2) also has the network namespaces, veths and bridge
# named in etc/network.sh: whatever still runs inside those namespaces is killed, then they are deleted.
set -uo pipefail
D=${SPLITSWEEP_SLURM_DIR:-/tmp/splitsweep-slurm}
PURGE=0; QUIET=0; LOCKED=0; NETONLY=0
for a in "$@"; do
  case "$a" in
    --purge) PURGE=1 ;;
    --quiet) QUIET=1 ;;
    --locked) LOCKED=1 ;;          # internal: the caller (start.sh) holds $D/.lock already
    --network-only) NETONLY=1 ;;   # internal: remove only the namespaces, veths and bridge (start.sh)
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "stop.sh: unknown option $a" >&2; exit 2 ;;
  esac
done
log() { [ "$QUIET" = 1 ] || echo "[slurm stop] $*"; }
[ -d "$D" ] || { log "nothing to stop: $D does not exist"; exit 0; }
if [ "$LOCKED" = 0 ]; then
  exec 9>"$D/.lock"
  flock -w 300 9 || { echo "stop.sh: another start.sh/stop.sh holds $D/.lock" >&2; exit 1; }
fi
export SLURM_CONF=$D/etc/slurm.conf

# alive PID: exists and is not a zombie (PID 1 in a container may reap orphans late)
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
# pid_of PIDFILE COMM: print the PID if that process is alive and really is COMM
pid_of() {
  local p
  [ -s "$1" ] || return 1
  p=$(tr -dc 0-9 < "$1")
  [ -n "$p" ] && alive "$p" && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ] && echo "$p"
}
# stop NAME [PIDFILE]: SIGTERM, wait up to 20 s, then SIGKILL
stop() {
  local name=$1 f=${2:-"$D/run/$1.pid"} p i
  p=$(pid_of "$f" "$name") || { rm -f "$f"; return 0; }
  kill -TERM "$p" 2>/dev/null
  for i in $(seq 1 200); do alive "$p" || break; sleep 0.1; done
  if alive "$p"; then log "$name ($p) ignored SIGTERM for 20 s: SIGKILL"; kill -KILL "$p" 2>/dev/null; sleep 0.3; fi
  rm -f "$f"
  log "stopped $name ($p)"
}
# the network of a multi-node cluster: kill what still runs in its namespaces (job processes; slurmd is
# stopped before), then delete the namespaces, the root ends of the veths and the bridge
network_down() {
  local BRIDGE="" NETNS="" VETHS="" ns v left
  [ -f "$D/etc/network.sh" ] || return 0
  . "$D/etc/network.sh"
  for ns in $NETNS; do
    ip netns list 2>/dev/null | grep -q "^$ns\b" || continue
    left=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
    if [ -n "${left// /}" ]; then
      log "killing processes left in $ns: $left"; kill -KILL $left 2>/dev/null; sleep 0.3
    fi
    ip netns del "$ns" && log "deleted network namespace $ns"
  done
  for v in $VETHS; do ip link show "$v" >/dev/null 2>&1 && ip link del "$v"; done
  if [ -n "$BRIDGE" ] && ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE" && log "deleted bridge $BRIDGE"; fi
  for ns in $NETNS; do ip netns list 2>/dev/null | grep -q "^$ns\b" && return 0; done
  [ "$NETONLY" = 1 ] || rm -f "$D/etc/network.sh"     # all gone (start.sh keeps it: it is making them)
  return 0
}
if [ "$NETONLY" = 1 ]; then network_down; exit 0; fi

# 1. cancel all jobs, and wait until none is running or completing
if pid_of "$D/run/slurmctld.pid" slurmctld >/dev/null; then
  jobs=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    log "cancelling jobs: $jobs"
    scancel $jobs 2>/dev/null
    for i in $(seq 1 100); do
      [ -z "$(squeue -h -t PD,R,CG,S,CF,RQ -o %A 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
fi
# 2. job processes slurmd still knows about get SIGKILL
if pid_of "$D/run/slurmd.pid" slurmd >/dev/null; then
  left=$(scontrol listpids 2>/dev/null | awk 'NR > 1 && $1 ~ /^[0-9]+$/ {print $1}')
  if [ -n "$left" ]; then log "killing leftover job processes: $left"; kill -KILL $left 2>/dev/null; fi
fi
# 3. daemons, in reverse start order (slurmctld saves its state, so job ids continue at the next start);
#    the slurmd of every node first (run/slurmd.pid, or run/slurmd-<node>.pid on several nodes)
for f in "$D/run/slurmd.pid" "$D"/run/slurmd-*.pid; do [ -e "$f" ] && stop slurmd "$f"; done
network_down
for name in slurmctld slurmdbd mariadbd munged; do stop "$name"; done
if [ "$PURGE" = 1 ]; then
  rm -rf "$D"
  log "purged $D"
fi
exit 0
