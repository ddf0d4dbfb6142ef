#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the SLURM integration tests.
#
# Usage (as root, on Debian/Ubuntu without systemd, e.g. CI or a container):
#   tests/slurm/setup_cluster.sh start [--no-install]   # install if needed, start, wait for idle
#   tests/slurm/setup_cluster.sh stop                   # stop what `start` started, by PID
#   tests/slurm/setup_cluster.sh status                 # sinfo, or why the cluster is down
#
# start: installs Debian's slurm-wlm and munge with apt-get when slurmctld is missing (unless
# --no-install), writes /etc/slurm/slurm.conf for this host (no cgroups: proctrack/linuxproc,
# task/none; no accounting; two fake GPUs and features named after the hardware profiles, so
# the GPU presets' --gpus-per-node and --constraint are accepted), starts munged, slurmctld and
# slurmd, and waits until the node is idle. Idempotent: a cluster that already answers is left
# as it is. Refuses to overwrite a slurm.conf it did not write.
# stop: stops slurmd, slurmctld and munged (each only if this script started it) by PID.
#
# State (spool, logs, pid files, fake devices, the status line) lives in $HARNESS_SLURM_STATE
# (default /tmp/harness-slurm). $HARNESS_SLURM_STATE/status holds "up" or "failed: <reason>";
# the tests print it when they skip. Exit status: 0 when the cluster is up (start) or stopped.
set -euo pipefail

STATE="${HARNESS_SLURM_STATE:-/tmp/harness-slurm}"
CONF=/etc/slurm/slurm.conf
GRES=/etc/slurm/gres.conf
MARK="# written by harness tests/slurm/setup_cluster.sh"
FEATURES="cpu,l40s,h100,h200,a100,b200"

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
say() { echo "setup_cluster: $*"; }

fail() {
    mkdir -p "$STATE"
    echo "failed: $*" >"$STATE/status"
    echo "setup_cluster: FAILED: $*" >&2
    exit 1
}

node_state() { timeout "${1:-5}" sinfo -h -o %t 2>/dev/null | head -n1 || true; }

cluster_up() { [[ "$(node_state "${1:-5}")" =~ ^(idle|mix|alloc) ]]; }

install_packages() {
    say "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends slurm-wlm munge >"$STATE/apt.log" 2>&1 || {
        apt-get update -q >>"$STATE/apt.log" 2>&1 &&
            apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$STATE/apt.log" 2>&1
    } || fail "apt-get install slurm-wlm munge failed (see $STATE/apt.log: $(tail -n1 "$STATE/apt.log"))"
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        say "munged already running"
        return
    fi
    [[ -s /etc/munge/munge.key ]] || fail "/etc/munge/munge.key is missing (munge's postinst makes it)"
    mkdir -p /run/munge
    chown munge:munge /run/munge
    chmod 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged || fail "munged did not start"
    cp /run/munge/munged.pid "$STATE/run/munged.pid"
    munge -n | unmunge >/dev/null || fail "munge credentials do not verify (munge -n | unmunge)"
}

write_conf() {
    local host node mem
    host="$(hostname -s)"
    getent hosts "$host" >/dev/null || echo "127.0.0.1 $host" >>/etc/hosts
    if [[ -e "$CONF" ]] && ! grep -qF "$MARK" "$CONF"; then
        fail "$CONF exists and was not written by this script; move it aside to use a test cluster"
    fi
    mkdir -p "$STATE"/{spool/slurmd,spool/slurmctld,log,run,dev} /etc/slurm
    for i in 0 1; do # fake GPUs: character devices (same numbers as /dev/null), no CUDA behind
        [[ -e "$STATE/dev/nvidia$i" ]] || mknod "$STATE/dev/nvidia$i" c 1 3
    done
    # this host's NodeName line, with RealMemory lowered by 10% (slurmd must not find less)
    node="$(/usr/sbin/slurmd -C | grep '^NodeName=')" || fail "slurmd -C printed no NodeName line"
    mem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")"
    node="${node/RealMemory=$mem/RealMemory=$((mem * 9 / 10))}"
    cat >"$CONF" <<EOF
$MARK
ClusterName=harnesstest
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.txt
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
GresTypes=gpu
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmdSpoolDir=$STATE/spool/slurmd
StateSaveLocation=$STATE/spool/slurmctld
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
$node Gres=gpu:2 Features=$FEATURES State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$GRES" <<EOF
$MARK
NodeName=$host Name=gpu File=$STATE/dev/nvidia[0-1]
EOF
}

start() {
    local install=1
    [[ "${1:-}" == "--no-install" ]] && install=0
    mkdir -p "$STATE/run"
    if cluster_up 1; then # a controller that answers does so in milliseconds
        say "a cluster already answers (node $(node_state)); leaving it as it is"
        echo up >"$STATE/status"
        return
    fi
    [[ "$(id -u)" == 0 ]] || fail "must run as root (it installs packages and starts daemons)"
    if [[ ! -x /usr/sbin/slurmctld || ! -x /usr/sbin/munged ]]; then
        ((install)) || fail "slurmctld/munged not installed (run: $0 start)"
        install_packages
    fi
    start_munge
    write_conf
    /usr/sbin/slurmctld -c || fail "slurmctld did not start (see $STATE/log/slurmctld.log)"
    /usr/sbin/slurmd || fail "slurmd did not start (see $STATE/log/slurmd.log)"
    for _ in $(seq 150); do
        if cluster_up; then
            echo up >"$STATE/status"
            say "cluster up in ${SECONDS} s: node $(hostname -s) $(node_state), state in $STATE"
            return
        fi
        sleep 0.2
    done
    fail "node not idle after 30 s (state '$(node_state)'; see $STATE/log/slurmctld.log, slurmd.log)"
}

stop_pidfile() { # stop_pidfile NAME PIDFILE: TERM, wait up to 10 s, then KILL
    local name="$1" file="$2" pid
    [[ -s "$file" ]] || return 0
    pid="$(cat "$file")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        say "stopped $name (pid $pid)"
    fi
    rm -f "$file"
}

stop() {
    stop_pidfile slurmd "$STATE/run/slurmd.pid"
    stop_pidfile slurmctld "$STATE/run/slurmctld.pid"
    stop_pidfile munged "$STATE/run/munged.pid"
    [[ -d "$STATE" ]] && echo "down: stopped by $0 stop" >"$STATE/status"
    return 0
}

status() {
    if cluster_up; then
        sinfo
    else
        echo "cluster down: $(cat "$STATE/status" 2>/dev/null || echo 'never started')"
        return 1
    fi
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) stop ;;
    status) status ;;
    *) usage ;;
esac
