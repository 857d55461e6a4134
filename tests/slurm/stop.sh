#!/usr/bin/env bash
# Stop the test SLURM cluster started by tests/slurm/start.sh, by its pid files (never by name).
set -uo pipefail
STATE=${SPIKELAB_SLURM_DIR:-/tmp/spikelab-slurm}

stop_pidfile() {
  local file=$1
  [ -s "$file" ] || return 0
  local pid
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$file"
}

stop_pidfile "$STATE/run/slurmd.pid"
stop_pidfile "$STATE/run/slurmctld.pid"
stop_pidfile /run/munge/munged.pid
if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$STATE/slurm.conf" ]; then
  rm -f /etc/slurm/slurm.conf
fi
echo "SLURM stopped"
