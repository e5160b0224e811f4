# slurm-common.sh - what both of impeccable's throwaway Slurm clusters share (runtime/backends/slurm/slurm-local.sh,
# one node; .ci/cluster.sh, N nodes of network namespaces): the core of their slurm.conf and how their daemons
# are stopped, kept in one place so that a fix to one is a fix to both. Sourced, not run; the sourcing script
# defines log().

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }  # PIDFILE: is its process running?

cancel_jobs() {  # CTLD_PIDFILE TENTHS: while slurmctld runs, cancel every job and wait up to TENTHS/10 s for none
  local i
  alive "$1" || return 0
  squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null || true
  for i in $(seq "$2"); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.1; done
}

stop_pids() {  # pidfile... : TERM all at once (each daemon takes ~2 s), KILL what stays after 15 s
  local pf pid i left pids=()
  for pf in "$@"; do
    if alive "$pf"; then pid=$(cat "$pf"); kill "$pid" 2>/dev/null || true; pids+=("$pid"); fi
  done
  for i in $(seq 150); do
    left=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
    [ "$left" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then log "pid $pid ignores TERM: KILL"; kill -9 "$pid" 2>/dev/null || true; fi
  done
  rm -f "$@"
}

slurm_conf_shared() {  # BASE: the cluster's config/state/log root
  local base=$1
  cat <<EOF
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$base/state/ctld
SlurmctldPidFile=$base/run/slurmctld.pid
SlurmctldLogFile=$base/log/slurmctld.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# a node may advertise more CPUs than the machine has (else it goes INVAL)
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MaxJobCount=50000
MaxStepCount=40000
EOF
}
