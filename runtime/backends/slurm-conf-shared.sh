# slurm-conf-shared.sh - the slurm.conf settings both of impeccable's throwaway Slurm clusters use
# (runtime/backends/slurm-local.sh, one node; .ci/cluster.sh, N nodes of network namespaces), kept in one
# place so that a setting fixed for one is fixed for both. Sourced, not run.

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
