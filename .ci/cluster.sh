#!/usr/bin/env bash
# cluster.sh - a real multi-node Slurm cluster on this one machine: N nodes, each a network namespace
# (and its own hostname) with its own slurmd, on a private bridge; slurmctld and a private munged on the
# host side, listening only on the bridge. The nodes share the file system, as compute nodes share a
# cluster's. Needs root, Slurm 22.05 (Debian's slurmctld slurmd slurm-client munge) and `ip netns`.
#
#   .ci/cluster.sh start [N]      N nodes (default 4): write the config, start munged, slurmctld and one
#                                 slurmd per node; wait until every node is idle (a few seconds)
#   .ci/cluster.sh stop           cancel jobs, stop every daemon and process this script started (by PID
#                                 file and by namespace), delete the namespaces, links, bridge; safe to run
#                                 after a failed or half-started run, and when nothing runs
#   .ci/cluster.sh status         daemons, namespaces, sinfo, squeue (exit 1 if not running)
#   .ci/cluster.sh exec CMD...    run CMD on the cluster's login node (its own namespace) with SLURM_CONF
#                                 set: srun/salloc/sbatch listen for replies, so clients run there, never
#                                 on the host's network; IMPECCABLE_DRAGON_LAUNCHER_ARGS says how Dragon
#                                 reaches these nodes (-t tcp --network-prefix eth0)
#   .ci/cluster.sh on NODE CMD... run CMD inside node NODE's namespace (as if logged in to it)
#   .ci/cluster.sh kill-node NODE lose a node: SIGKILL its slurmd and every process in its namespace
#   .ci/cluster.sh revive NODE    a lost node back: its slurmd started again, the node resumed
#   .ci/cluster.sh reap           kill processes left on the nodes by jobs that ended (orphans whose parent
#                                 died: Dragon's services after a failed start, say), which hold a job in
#                                 COMPLETING; a site's cgroup proctrack does this, linuxproc here cannot
#   .ci/cluster.sh env            print 'export SLURM_CONF=...'
#
# Settings (environment); the defaults keep clear of the single-node CI cluster (slurm-local.sh: ports
# 6817/6818, /tmp/impeccable-slurm, the system munged), so both can run at once:
#   IMPECCABLE_CLUSTER_DIR    config/state/log root              [/tmp/impeccable-cluster]
#   IMPECCABLE_CLUSTER_CPUS   CPUs each node advertises           [4] (may exceed the machine's)
#   IMPECCABLE_CLUSTER_NET    first three octets of the /24       [10.250.25]
#   IMPECCABLE_CLUSTER_PORT   slurmctld port; slurmd uses PORT+1  [6917]
#   IMPECCABLE_CLUSTER_TIMEOUT  seconds to wait for idle nodes    [60]
#
# Names: namespaces impcl-login and impcl-node0..N-1, host-side veths impcl-h*, bridge impcl-br0; nodes
# node0..N-1 at NET.10+i, the login node at NET.2, slurmctld at NET.1 (the bridge's address). Inside each
# namespace /etc/hosts (BASE/etc/hosts, bind-mounted in a private mount namespace) names them all.
# No listener outside loopback and the bridge: slurmctld binds NET.1 only (NoCtldInAddrAny), slurmd,
# slurmstepd and every client listen inside their namespace, which has only lo and its bridge link; the
# namespaces have no default route.
set -euo pipefail
# the slurm.conf core and stop_pids, shared with the single-node cluster (runtime/backends/slurm/slurm-local.sh)
source "$(dirname "${BASH_SOURCE[0]}")/../runtime/backends/slurm/slurm-common.sh"

BASE=${IMPECCABLE_CLUSTER_DIR:-/tmp/impeccable-cluster}
CPUS=${IMPECCABLE_CLUSTER_CPUS:-4}
NET=${IMPECCABLE_CLUSTER_NET:-10.250.25}
PORT=${IMPECCABLE_CLUSTER_PORT:-6917}
TIMEOUT=${IMPECCABLE_CLUSTER_TIMEOUT:-60}
CONF=$BASE/etc/slurm.conf
MUNGE_SOCKET=$BASE/munge-socket/munge.socket
PREFIX=impcl
CTLD_HOST=slurmctld   # its own host name (UTS namespace): slurmctld runs only where SlurmctldHost matches
BRIDGE=$PREFIX-br0
export SLURM_CONF=$CONF
# Dragon over these nodes: its TCP transport (its default, HSTA, needs a high-speed fabric's libfabric) on the
# nodes' bridge link (its default prefix matches only Cray/InfiniBand interface names)
DRAGON_ARGS="-t tcp --network-prefix eth0"

log() { echo "[cluster] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

case "$BASE" in /*) ;; *) die "IMPECCABLE_CLUSTER_DIR must be an absolute path (the daemons chdir away), got '$BASE'";; esac
need_root() { [ "$(id -u)" = 0 ] || die "'$1' must run as root (it creates namespaces and starts daemons)"; }

nodes() { cat "$BASE/run/nodes" 2>/dev/null || true; }   # the node names of the running cluster

# ------------------------------------------------------------------ network
netns_ok() {  # can this kernel make namespaces, veth pairs and bridges? (says why not on stderr)
  command -v ip >/dev/null || { log "no 'ip' command (iproute2)"; return 1; }
  local probe=$PREFIX-probe$$
  if ! ip netns add "$probe" 2>"$BASE/log/netns-probe.err"; then
    log "cannot create a network namespace: $(cat "$BASE/log/netns-probe.err")"; return 1
  fi
  ip netns del "$probe"
  if ! ip link add "$PREFIX-pb$$" type bridge 2>"$BASE/log/netns-probe.err"; then
    log "cannot create a bridge: $(cat "$BASE/log/netns-probe.err")"; return 1
  fi
  ip link del "$PREFIX-pb$$"
}

add_host() {  # NAMESPACE ADDR VETH: a namespace with lo and one link to the bridge
  local ns=$1 addr=$2 veth=$3
  ip netns add "$ns"
  ip link add "$veth" type veth peer name "$veth-c"
  ip link set "$veth" master "$BRIDGE"
  ip link set "$veth" up
  ip link set "$veth-c" netns "$ns"
  ip netns exec "$ns" ip link set "$veth-c" name eth0
  ip netns exec "$ns" ip addr add "$addr/24" dev eth0
  ip netns exec "$ns" ip link set eth0 up
  ip netns exec "$ns" ip link set lo up
}

make_network() {  # N
  local n=$1 i
  {
    echo "127.0.0.1 localhost"
    echo "$NET.1 $CTLD_HOST"
    echo "$NET.2 login"
    for i in $(seq 0 $((n - 1))); do echo "$NET.$((10 + i)) node$i"; done
  } > "$BASE/etc/hosts"
  ip link add "$BRIDGE" type bridge
  ip addr add "$NET.1/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  add_host "$PREFIX-login" "$NET.2" "$PREFIX-hl"
  for i in $(seq 0 $((n - 1))); do add_host "$PREFIX-node$i" "$NET.$((10 + i))" "$PREFIX-h$i"; done
}

in_ns() {  # NAMESPACE HOSTNAME CMD...: CMD in the namespace's network ("host": the host's), with its own
  # hostname (UTS) and the cluster's /etc/hosts (a private mount namespace). Not `ip netns exec`: it remounts
  # /sys, which hides /sys/fs/cgroup from slurmd.
  local ns=$1 name=$2 enter=() shm=true
  shift 2
  # a node has its own /dev/shm (Dragon names its pools alike on every node) and its own boot_id (Dragon
  # tells hosts apart by it); the host keeps its own
  if [ "$ns" != host ]; then enter=(nsenter --net="/run/netns/$ns"); shm="mount -t tmpfs -o mode=1777 shm /dev/shm"; fi
  [ -s "$BASE/etc/boot_id.$name" ] || cat /proc/sys/kernel/random/uuid > "$BASE/etc/boot_id.$name"
  "${enter[@]}" unshare --mount --uts sh -c 'mount --bind "$0" /etc/hosts && $1 &&
    mount --bind "$2" /proc/sys/kernel/random/boot_id && hostname "$3" && shift 3 && exec "$@"' \
    "$BASE/etc/hosts" "$shm" "$BASE/etc/boot_id.$name" "$name" "$@"
}

# ------------------------------------------------------------------ configure
write_conf() {  # N
  local n=$1 i mem
  mem=$(awk -v n="$n" '/^MemTotal:/{print int($2/1024*0.9/n)}' /proc/meminfo)
  {
    cat <<EOF
# generated by impeccable's .ci/cluster.sh; rewritten by every 'start'
ClusterName=impcluster
SlurmctldHost=$CTLD_HOST($NET.1)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
# slurmctld binds the bridge address only (NET.1), never all interfaces
CommunicationParameters=NoCtldInAddrAny
SlurmdSpoolDir=$BASE/state/%n
SlurmdPidFile=$BASE/run/slurmd-%n.pid
SlurmdLogFile=$BASE/log/slurmd-%n.log
# a lost node is declared DOWN after 20 s without an answer (a site's default is 300 s; 6 s made busy
# nodes of this one machine look lost at a load average of 80); jobs started with --no-kill go on
SlurmdTimeout=20
EOF
    slurm_conf_shared "$BASE"
    for i in $(seq 0 $((n - 1))); do
      echo "NodeName=node$i NodeHostname=node$i NodeAddr=$NET.$((10 + i)) CPUs=$CPUS RealMemory=$mem State=UNKNOWN"
    done
    echo "PartitionName=nodes Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
  } > "$CONF.tmp"
  mv "$CONF.tmp" "$CONF"
}

# ------------------------------------------------------------------ munge (a private one: own key, own socket)
munge_works() { munge -S "$MUNGE_SOCKET" -n 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; }

start_munge() {
  install -d -o munge -g munge -m 0700 "$BASE/munge"          # the key: munge's alone
  install -d -o munge -g munge -m 0755 "$BASE/munge-socket"   # the socket: every client must reach it
  if [ ! -s "$BASE/munge/munge.key" ]; then
    runuser -u munge -- mungekey --create --keyfile="$BASE/munge/munge.key"
  fi
  touch "$BASE/log/munged.log" "$BASE/run/munged.pid"
  chown munge:munge "$BASE/log/munged.log" "$BASE/run/munged.pid"
  runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$BASE/munge/munge.key" \
    --pid-file="$BASE/run/munged.pid" --log-file="$BASE/log/munged.log" --seed-file="$BASE/munge/munged.seed" \
    || die "munged failed to start (see $BASE/log/munged.log)"
  local i
  for i in $(seq 50); do munge_works && return 0; sleep 0.1; done
  die "munged started but munge/unmunge on $MUNGE_SOCKET fail (see $BASE/log/munged.log)"
}

# ------------------------------------------------------------------ start
node_states() { sinfo -h -N -o '%N %T' 2>/dev/null || true; }

wait_idle() {
  local t0=$1 i states
  for i in $(seq $((TIMEOUT * 10))); do
    states=$(node_states)
    if [ -n "$states" ] && ! echo "$states" | grep -qvE ' (idle|mixed|allocated)$'; then return 0; fi
    echo "$states" | awk '$2 ~ /^(down|drain)/ {print $1}' | while read -r node; do
      scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
    done
    sleep 0.1
  done
  log "nodes not ready after ${TIMEOUT}s: $(echo "$states" | tr '\n' ' '); last log lines:"
  tail -n 10 "$BASE"/log/slurmctld.log "$BASE"/log/slurmd-*.log >&2 2>/dev/null || true
  return 1
}

do_start() {
  local n=${1:-4}
  need_root start
  case "$n" in ''|*[!0-9]*) die "the node count must be a number, got '$n'";; esac
  [ "$n" -ge 1 ] && [ "$n" -le 64 ] || die "the node count must be between 1 and 64, got $n"
  for cmd in slurmctld slurmd srun munged; do
    command -v "$cmd" >/dev/null || die "$cmd not found: apt-get install slurmctld slurmd slurm-client munge"
  done
  if alive "$BASE/run/slurmctld.pid"; then
    [ "$(nodes | wc -l)" = "$n" ] || die "a cluster of $(nodes | wc -l) nodes is running: '$0 stop' first"
    wait_idle "$(now)" || die "the running cluster is not healthy: run '$0 stop' then '$0 start $n'"
    log "already running: $n nodes"; return 0
  fi
  do_stop quiet   # whatever a failed run left behind
  local t0; t0=$(now)
  mkdir -p "$BASE"/{etc,state/ctld,log,run}
  netns_ok || die "this kernel (or container) cannot make the network namespaces the nodes need"
  write_conf "$n"
  : > "$BASE/run/nodes"
  for i in $(seq 0 $((n - 1))); do echo "node$i" >> "$BASE/run/nodes"; mkdir -p "$BASE/state/node$i"; done
  make_network "$n"
  start_munge
  # its host name resolves to NET.1 here, so NoCtldInAddrAny binds the bridge address, nothing else
  in_ns host "$CTLD_HOST" slurmctld -f "$CONF" || die "slurmctld failed to start (see $BASE/log/slurmctld.log)"
  for i in $(seq 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.1; done
  for i in $(seq 0 $((n - 1))); do
    in_ns "$PREFIX-node$i" "node$i" slurmd -N "node$i" -f "$CONF" || die "slurmd of node$i failed to start"
  done
  wait_idle "$t0" || die "the nodes did not become idle (logs under $BASE/log)"
  log "up in $(since "$t0") s: $n nodes (node0..node$((n - 1)), $CPUS CPUs each), slurmctld $NET.1:$PORT"
  log "run clients on the login node: $0 exec salloc -N$n ...   (SLURM_CONF=$CONF)"
}

# ------------------------------------------------------------------ stop

kill_namespace() {  # NS: SIGKILL every process inside it (all of them were started into it by this script)
  local ns=$1 pids
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  if [ -n "$pids" ]; then kill -9 $pids 2>/dev/null || true; fi
}

our_namespaces() { ip netns list 2>/dev/null | awk '{print $1}' | grep "^$PREFIX-" || true; }

do_stop() {
  local quiet=${1:-} ns link
  if [ ! -d "$BASE/run" ] && [ -z "$(our_namespaces)" ]; then
    [ -n "$quiet" ] || log "not running"
    return 0
  fi
  need_root stop
  cancel_jobs "$BASE/run/slurmctld.pid" 30   # end jobs cleanly first
  stop_pids "$BASE"/run/slurmd-*.pid
  for ns in $(our_namespaces); do kill_namespace "$ns"; done
  stop_pids "$BASE/run/slurmctld.pid" "$BASE/run/munged.pid"
  for ns in $(our_namespaces); do ip netns del "$ns" 2>/dev/null || true; done
  for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^$PREFIX-" || true); do
    ip link del "$link" 2>/dev/null || true
  done
  rm -f "$BASE/run/nodes"
  [ -n "$quiet" ] || log "stopped"
}

do_revive() {  # NODE: a lost node back (its slurmd started again; Slurm returns it to service)
  local node=${1:-} i
  need_root revive
  nodes | grep -qx "$node" || die "no node '$node' in the running cluster (nodes: $(nodes | tr '\n' ' '))"
  alive "$BASE/run/slurmd-$node.pid" && { log "$node is up"; return 0; }
  in_ns "$PREFIX-$node" "$node" slurmd -N "$node" -f "$CONF" || die "slurmd of $node failed to start"
  scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
  wait_idle "$(now)" || die "$node did not come back (logs under $BASE/log)"
  log "$node back"
}

do_reap() {  # processes that outlived their job on the nodes (orphans: their parent is gone) are killed
  local node ns pid keep n=0
  for node in $(nodes); do
    ns=$PREFIX-$node
    keep=$(cat "$BASE/run/slurmd-$node.pid" 2>/dev/null || true)
    for pid in $(ip netns pids "$ns" 2>/dev/null || true); do
      [ "$pid" = "$keep" ] && continue
      if [ "$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null)" = 1 ]; then kill -9 "$pid" 2>/dev/null && n=$((n + 1)); fi
    done
  done
  log "reaped $n orphaned process(es) on the nodes"
}

do_kill_node() {  # NODE
  local node=${1:-}
  need_root kill-node
  nodes | grep -qx "$node" || die "no node '$node' in the running cluster (nodes: $(nodes | tr '\n' ' '))"
  kill_namespace "$PREFIX-$node"
  rm -f "$BASE/run/slurmd-$node.pid"
  log "$node lost: its slurmd and every process on it killed"
}

# ------------------------------------------------------------------ status
do_status() {
  local ok=0 node
  if alive "$BASE/run/slurmctld.pid"; then echo "slurmctld: running, pid $(cat "$BASE/run/slurmctld.pid")"
  else echo "slurmctld: not running"; ok=1; fi
  if alive "$BASE/run/munged.pid"; then echo "munged: running, pid $(cat "$BASE/run/munged.pid")"
  else echo "munged: not running"; ok=1; fi
  for node in $(nodes); do
    if alive "$BASE/run/slurmd-$node.pid"; then echo "slurmd $node: running, pid $(cat "$BASE/run/slurmd-$node.pid")"
    else echo "slurmd $node: not running"; fi
  done
  echo "namespaces: $(our_namespaces | tr '\n' ' ')"
  [ "$ok" = 0 ] && { sinfo -N 2>&1 || ok=1; squeue 2>&1 || true; }
  return $ok
}

case "${1:-}" in
  start)     do_start "${2:-4}";;
  stop)      do_stop;;
  status)    do_status;;
  exec)      shift; [ $# -gt 0 ] || die "exec: give a command"
             in_ns "$PREFIX-login" login env SLURM_CONF="$CONF" \
               IMPECCABLE_DRAGON_LAUNCHER_ARGS="${IMPECCABLE_DRAGON_LAUNCHER_ARGS-$DRAGON_ARGS}" "$@";;
  on)        shift; node=${1:-}; shift || true
             alive "$BASE/run/slurmd-$node.pid" || die "no node '$node' running (nodes: $(nodes | tr '\n' ' '))"
             # the namespaces of the node's slurmd: the same /dev/shm and hostname as its jobs
             nsenter -t "$(cat "$BASE/run/slurmd-$node.pid")" --net --mount --uts env SLURM_CONF="$CONF" "$@";;
  kill-node) do_kill_node "${2:-}";;
  reap)      need_root reap; do_reap;;
  revive)    do_revive "${2:-}";;
  env)       echo "export SLURM_CONF=$CONF";;
  *) sed -n '2,38p' "$0" >&2; exit 2;;
esac
