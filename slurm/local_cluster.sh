#!/usr/bin/env bash
# A real single-node SLURM (Debian slurm-wlm 22.05) with accounting (slurmdbd + MariaDB) on this machine,
# to try sweeps locally and for the SLURM tests. Runs as root, needs no systemd and no cgroups.
#
#   slurm/local_cluster.sh install   apt packages (skipped when already there)
#   slurm/local_cluster.sh start     install if needed, write configs, start munged, mariadb, slurmdbd,
#                                    slurmctld, slurmd; wait until the node is idle (no-op when running)
#   slurm/local_cluster.sh stop      cancel the cluster's jobs, stop every daemon it started
#   slurm/local_cluster.sh status    daemons and node state; exit 0 when the cluster takes jobs
#
# Settings (see docs/slurm.md for why each is needed): proctrack/linuxproc + task/none (no cgroups),
# AuthInfo=cred_expire=10 (a requeued job restarts within seconds, not 120 s),
# bf_interval=1,sched_interval=2 (a requeued job is scheduled at once), KillWait=5.
set -euo pipefail

CLUSTER=asae
PARTITION=local
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=asae-local-slurmdbd
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
BINARIES=(slurmctld slurmd sbatch munged slurmdbd mariadbd)

log() { echo "local_cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts daemons)"

pid_alive() {  # pid_alive PID: the process runs (a zombie waiting to be reaped does not)
    kill -0 "$1" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]
}

alive() {  # alive PIDFILE: the process named in PIDFILE runs
    [[ -s $1 ]] && pid_alive "$(cat "$1")"
}

installed() {
    local b
    for b in "${BINARIES[@]}"; do
        command -v "$b" >/dev/null 2>&1 || [[ -x /usr/sbin/$b ]] || return 1
    done
}

cmd_install() {
    if installed; then
        log "already installed (slurm $(dpkg-query -W -f '${Version}' slurmctld))"
        return 0
    fi
    log "installing ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
    installed || die "packages installed but some of ${BINARIES[*]} are missing"
    log "installed slurm $(dpkg-query -W -f '${Version}' slurmctld)"
}

node_name() { hostname -s; }

write_configs() {
    local node mem_kb
    node=$(node_name)
    # slurmd drains a node that claims more memory than it has: claim ~90%.
    mem_kb=$(awk '/^MemTotal/ {print $2}' /proc/meminfo)
    getent hosts "$node" >/dev/null || echo "127.0.0.1 $node" >>/etc/hosts
    mkdir -p "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
    cat >"$CONF_DIR/slurm.conf" <<EOF
# Written by slurm/local_cluster.sh: a single-node cluster for local sweeps and tests.
ClusterName=$CLUSTER
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
KillWait=5
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
NodeName=$node NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$((mem_kb * 9 / 10 / 1024)) State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$CONF_DIR/slurmdbd.conf" <<EOF
# Written by slurm/local_cluster.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
PidFile=/run/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
EOF
    chown root:root "$CONF_DIR/slurmdbd.conf"
    chmod 600 "$CONF_DIR/slurmdbd.conf"
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: retry COMMAND every 0.2 s
    local seconds=$1 what=$2 i
    shift 2
    for ((i = 0; i < seconds * 5; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "$what did not come up within ${seconds}s (logs: $LOG_DIR, /var/log/mysql)"
}

start_munge() {
    if alive /run/munge/munged.pid; then return 0; fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge
    chown munge:munge /run/munge
    rm -f /run/munge/munged.pid /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    runuser -u munge -- /usr/sbin/munged
    wait_for 10 munged bash -c 'munge -n | unmunge'
}

start_mariadb() {
    if ! mysqladmin ping >/dev/null 2>&1; then
        /etc/init.d/mariadb start >/dev/null
        wait_for 30 mariadb mysqladmin ping
    fi
    mysql -e "CREATE DATABASE IF NOT EXISTS $DB_NAME;
              CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
              GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost'; FLUSH PRIVILEGES;"
}

start_slurmdbd() {
    if ! alive /run/slurmdbd.pid; then
        /usr/sbin/slurmdbd
    fi
    wait_for 30 slurmdbd sacctmgr -n list cluster
    if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
}

node_state() { sinfo -h -N -o %T 2>/dev/null | head -n1; }

node_ready() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; }

running() {  # every piece `status` checks: a dead MariaDB under live daemons is not a running cluster (sacct fails)
    alive /run/munge/munged.pid && mysqladmin ping >/dev/null 2>&1 && alive /run/slurmdbd.pid \
        && alive /run/slurmctld.pid && alive /run/slurmd.pid && node_ready
}

cmd_start() {
    if installed && running; then
        log "already running (node $(node_name): $(node_state))"
        return 0
    fi
    cmd_install
    write_configs
    start_munge
    start_mariadb
    start_slurmdbd
    if ! alive /run/slurmctld.pid; then /usr/sbin/slurmctld; fi
    wait_for 30 slurmctld scontrol ping
    if ! alive /run/slurmd.pid; then /usr/sbin/slurmd; fi
    local i
    for ((i = 0; i < 150; i++)); do
        node_ready && break
        # A node that was down when slurmctld last saw it stays down/drained: bring it back.
        if [[ $(node_state) =~ ^(down|drained|draining) ]]; then
            scontrol update nodename="$(node_name)" state=resume >/dev/null 2>&1 || true
        fi
        sleep 0.2
    done
    node_ready || die "node $(node_name) is $(node_state), not idle (see $LOG_DIR/slurmd.log)"
    log "running: cluster $CLUSTER, partition $PARTITION, node $(node_name) ($(nproc) CPUs) $(node_state)"
}

stop_pidfile() {  # stop_pidfile NAME PIDFILE
    local pid i
    alive "$2" || { rm -f "$2"; return 0; }
    pid=$(cat "$2")
    kill "$pid"
    for ((i = 0; i < 100; i++)); do
        pid_alive "$pid" || { rm -f "$2"; return 0; }
        sleep 0.1
    done
    log "$1 (pid $pid) did not stop within 10 s; killing it"
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$2"
}

cmd_stop() {
    if alive /run/slurmctld.pid; then
        local jobs
        jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
        if [[ -n ${jobs// /} ]]; then
            log "cancelling jobs $jobs"
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            for ((i = 0; i < 100; i++)); do
                [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break
                sleep 0.1
            done
        fi
    fi
    stop_pidfile slurmd /run/slurmd.pid
    stop_pidfile slurmctld /run/slurmctld.pid
    stop_pidfile slurmdbd /run/slurmdbd.pid
    if command -v mysqladmin >/dev/null && mysqladmin ping >/dev/null 2>&1; then
        /etc/init.d/mariadb stop >/dev/null
    fi
    stop_pidfile munged /run/munge/munged.pid
    log "stopped"
}

cmd_status() {
    local name file ok=0
    installed || { log "not installed"; return 3; }
    for name in munged:/run/munge/munged.pid slurmdbd:/run/slurmdbd.pid slurmctld:/run/slurmctld.pid \
        slurmd:/run/slurmd.pid; do
        file=${name#*:}
        if alive "$file"; then
            echo "${name%%:*}: running (pid $(cat "$file"))"
        else
            echo "${name%%:*}: stopped"
            ok=3
        fi
    done
    if mysqladmin ping >/dev/null 2>&1; then echo "mariadb: running"; else echo "mariadb: stopped"; ok=3; fi
    if alive /run/slurmctld.pid; then
        echo "node $(node_name): $(node_state)"
        node_ready || ok=3
    fi
    return $ok
}

case ${1:-} in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
