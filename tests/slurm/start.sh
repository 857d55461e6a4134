#!/usr/bin/env bash
# Start a real single-node SLURM cluster on this machine for the tests (Debian 12, as root,
# without systemd): installs slurmctld/slurmd/munge with apt if missing, writes a minimal
# slurm.conf under $SPIKELAB_SLURM_DIR (default /tmp/spikelab-slurm), starts munged, slurmctld
# and slurmd by hand and waits until the node is idle. Stop it with tests/slurm/stop.sh.
set -euo pipefail
STATE=${SPIKELAB_SLURM_DIR:-/tmp/spikelab-slurm}

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

if [ -e /etc/slurm/slurm.conf ] && [ ! -L /etc/slurm/slurm.conf ]; then
  echo "start.sh: /etc/slurm/slurm.conf exists and is not ours; refusing to replace it" >&2
  exit 1
fi

mkdir -p "$STATE"/spool/ctld "$STATE"/spool/d "$STATE"/log "$STATE"/run
host=$(hostname -s)
node=$(slurmd -C | head -n 1)
cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node")
mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
mem=$((mem * 90 / 100))

cat >"$STATE/slurm.conf" <<CONF
ClusterName=spikelab-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
SchedulerParameters=sched_interval=1
MinJobAge=300
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

# The executor plugin's job step strips SLURM_* variables (SLURM_CONF included) before its
# nested srun, so the configuration must also be where Slurm looks by default.
mkdir -p /etc/slurm
ln -sfn "$STATE/slurm.conf" /etc/slurm/slurm.conf

# munge: key from the package's postinst, or a fresh one.
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge
if ! { [ -s /run/munge/munged.pid ] && kill -0 "$(cat /run/munge/munged.pid)" 2>/dev/null; }; then
  runuser -u munge -- /usr/sbin/munged
fi

slurmctld -f "$STATE/slurm.conf" -i
slurmd -f "$STATE/slurm.conf"

for _ in $(seq 1 120); do
  state=$(sinfo -h -o %t 2>/dev/null | head -n 1 || true)
  if [ "$state" = "idle" ]; then
    echo "SLURM is up: node $host ($cpus CPUs, $mem MB), state under $STATE"
    exit 0
  fi
  sleep 0.5
done
echo "start.sh: the node did not become idle; see $STATE/log/" >&2
sinfo >&2 || true
exit 1
