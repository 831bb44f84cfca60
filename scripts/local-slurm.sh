#!/usr/bin/env bash
# local-slurm.sh — bring up / tear down a REAL multi-node Slurm cluster on this
# one (Debian 12) machine, for detflow's Slurm/submitit integration tests.
#
#   scripts/local-slurm.sh start    install packages if missing (root), start
#                                   munged, mariadbd, slurmdbd, slurmctld and one
#                                   slurmd per compute node
#   scripts/local-slurm.sh stop     stop all of the daemons above, remove the
#                                   nodes' network namespaces, veths and bridge
#   scripts/local-slurm.sh status   daemons, nodes, sinfo + whether sacct answers
#   scripts/local-slurm.sh reset    stop slurm, DROP the accounting database (SQL),
#                                   start again with a cleared slurmctld job state
#
# Compute nodes: $DETFLOW_SLURM_NODES (default 2) nodes node1..nodeN, each slurmd
# in its own network + UTS namespace (hostname nodeI, address $NET.(10+I) on a
# veth pair attached to bridge $BRIDGE, whose host side $NET.1 is where
# slurmctld and slurmdbd answer). Only net and UTS differ: the filesystem (munge's
# socket, /tmp, the sweep directories) and the pids are shared. Traffic stays on
# the bridge: nothing is routed off the machine.
#
# Idempotent: `start` on a running cluster only checks it; `stop` on a stopped
# one does nothing. Everything lives under $DETFLOW_SLURM_ROOT
# (default /var/lib/detflow-slurm); config files go to /etc/slurm.
# See tests/slurm/README.md.
set -Eeuo pipefail
trap 'rc=$?; printf "[local-slurm] ERROR: \"%s\" failed (rc=%s, line %s)\n" "$BASH_COMMAND" "$rc" "$LINENO" >&2' ERR

ROOT="${DETFLOW_SLURM_ROOT:-/var/lib/detflow-slurm}"
CLUSTER="${DETFLOW_SLURM_CLUSTER:-detflow}"
WAIT_S="${DETFLOW_SLURM_WAIT_S:-60}"
ETC=/etc/slurm
RUN="$ROOT/run"
LOG="$ROOT/log"
DBDIR="$ROOT/mysql"
DBRUN="$RUN/mysqld"      # owned by mysql: mariadbd writes socket + pid here
DBSOCK="$DBRUN/mysqld.sock"
DBPID="$DBRUN/mariadbd.pid"
FAKEDEV="$ROOT/dev"
MUNGE_PID=/run/munge/munged.pid
NODES="${DETFLOW_SLURM_NODES:-2}"
NET="${DETFLOW_SLURM_NET:-10.77.0}"      # a /24: bridge .1, nodeI .(10+I)
BRIDGE=dfslurm0
CTLD_ADDR="$NET.1"
NETNS_PREFIX=detflow-          # netns detflow-nodeI, host-side veth dfs-nodeI
HOSTS_BEGIN="# >>> detflow local-slurm nodes (scripts/local-slurm.sh)"
HOSTS_END="# <<< detflow local-slurm nodes"
LOCK=/run/detflow-local-slurm.lock
PKGS=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

# libmariadb (slurmdbd's accounting plugin, and the mariadb client) honours this
# for StorageHost=localhost, so our private server needs no system-wide socket.
export MYSQL_UNIX_PORT="$DBSOCK"

T0=$(date +%s.%N)
STAGE_T=$T0

say() { printf '[local-slurm] %s\n' "$*"; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2fs", b-a}'; }
stage_begin() { STAGE_T=$(date +%s.%N); }
stage_end() { say "$1 ($(elapsed "$STAGE_T"))"; }
die() { say "ERROR: $*" >&2; exit 1; }
tail_log() {
    local f
    for f in "$@"; do
        if [[ -f $f ]]; then
            say "---- last lines of $f ----" >&2
            tail -n 25 "$f" >&2 || true
        else
            say "---- (no log file $f) ----" >&2
        fi
    done
}

# wait_for DESCRIPTION LOGFILE... -- COMMAND...: poll COMMAND every 0.2 s for
# up to $WAIT_S seconds; on timeout print the logs' tails and exit non-zero.
wait_for() {
    local what=$1; shift
    local logs=()
    while [[ $1 != -- ]]; do logs+=("$1"); shift; done
    shift
    local deadline=$(( $(date +%s) + WAIT_S ))
    until "$@" >/dev/null 2>&1; do
        if (( $(date +%s) >= deadline )); then
            say "ERROR: timed out after ${WAIT_S}s waiting for $what" >&2
            tail_log "${logs[@]}"
            exit 1
        fi
        sleep 0.2
    done
}

# proc_alive PID [NAME]: a zombie counts as dead (some inits, this VM's among
# them, reap slowly); with NAME, a recycled pid running something else too.
proc_alive() {
    local out st comm
    out=$(ps -o stat=,comm= -p "$1" 2>/dev/null) || return 1
    read -r st comm <<<"$out"
    [[ -n $st && $st != Z* ]] || return 1
    [[ -z ${2:-} || $comm == "$2" ]]
}
# pid_alive PIDFILE [NAME]: the daemon NAME (default: the pid file's name, as in
# munged.pid; slurmd-node1.pid passes NAME=slurmd) runs with the file's pid.
pid_alive() {
    [[ -s $1 ]] || return 1
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && proc_alive "$pid" "${2:-$(basename "$1" .pid)}"
}

# stop_pidfile NAME PIDFILE [COMM]: SIGTERM, wait up to 20 s, then SIGKILL.
stop_pidfile() {
    local name=$1 pf=$2 comm=${3:-} pid i outer_t=$STAGE_T
    stage_begin
    if ! pid_alive "$pf" "$comm"; then
        say "$name: not running"
        rm -f "$pf"
        return 0
    fi
    pid=$(cat "$pf")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
        proc_alive "$pid" || break
        sleep 0.1
    done
    if proc_alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
        stage_end "$name: stopped (pid $pid, needed SIGKILL)"
    else
        stage_end "$name: stopped (pid $pid)"
    fi
    rm -f "$pf"
    STAGE_T=$outer_t
}

need_root() {
    [[ $(id -u) -eq 0 ]] || die "$1 needs root (run as root or via sudo)"
}

# ---------------------------------------------------------------- install ---
install_packages() {
    stage_begin
    local missing=() c
    for c in slurmctld slurmd slurmdbd sbatch sacct sacctmgr munged mungekey \
             mariadbd mariadb-install-db mariadb; do
        PATH="$PATH:/usr/sbin:/sbin" command -v "$c" >/dev/null 2>&1 || missing+=("$c")
    done
    if ((${#missing[@]} == 0)); then
        stage_end "install: packages already present"
        return 0
    fi
    need_root "installing packages (missing: ${missing[*]})"
    say "install: missing ${missing[*]}; apt-get install ${PKGS[*]}"
    # keep package scripts from trying to start the daemons themselves
    local policy_added=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_added=1
    fi
    local rc=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -q &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PKGS[@]}"
    } > "/tmp/local-slurm-apt.log" 2>&1 || rc=$?
    ((policy_added)) && rm -f /usr/sbin/policy-rc.d
    if ((rc != 0)); then
        tail -n 30 /tmp/local-slurm-apt.log >&2 || true
        die "apt-get failed (rc=$rc), full log in /tmp/local-slurm-apt.log"
    fi
    stage_end "install: installed ${PKGS[*]}"
}

# ------------------------------------------------------------------ nodes ---
check_nodes() {
    [[ $NODES =~ ^[1-9][0-9]?$ ]] && ((NODES <= 50)) \
        || die "DETFLOW_SLURM_NODES=$NODES: expected a node count from 1 to 50"
    [[ $NET =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] \
        || die "DETFLOW_SLURM_NET=$NET: expected the first three numbers of a /24, e.g. 10.77.0"
}
node_names() { local i; for ((i = 1; i <= NODES; i++)); do printf 'node%d\n' "$i"; done; }
node_addr() { printf '%s.%d' "$NET" $((10 + ${1#node})); }
node_list() { ((NODES == 1)) && echo node1 || echo "node[1-$NODES]"; }
node_lines() {
    local n
    for n in $(node_names); do echo "NodeName=$n NodeAddr=$(node_addr "$n") $1"; done
}
netns_of() { echo "$NETNS_PREFIX$1"; }
veth_of() { echo "dfs-$1"; }
# nodes that exist now (any count: a stop after DETFLOW_SLURM_NODES changed finds all)
existing_nodes() {
    { ip netns list 2>/dev/null | awk '{print $1}' | sed -n "s/^$NETNS_PREFIX//p"
      local f
      for f in "$RUN"/slurmd-node*.pid; do
          if [[ -e $f ]]; then basename "$f" .pid | sed 's/^slurmd-//'; fi
      done
    } | sort -u -V
}

# the bridge, one netns + veth pair per node, /etc/hosts names (gloo and
# torch.distributed resolve the nodes' hostnames)
setup_network() {
    stage_begin
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
    fi
    # grep reads all of ip's output (no -q): under pipefail, an early exit would SIGPIPE ip
    # and the address already there would be added again
    ip addr show dev "$BRIDGE" | grep "inet $CTLD_ADDR/" >/dev/null || ip addr add "$CTLD_ADDR/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    local n ns veth addr
    for n in $(node_names); do
        ns=$(netns_of "$n") veth=$(veth_of "$n") addr=$(node_addr "$n")
        [[ -e /run/netns/$ns ]] || ip netns add "$ns"
        if ! ip link show "$veth" >/dev/null 2>&1; then
            ip link add "$veth" type veth peer name eth0 netns "$ns"
        fi
        ip link set "$veth" master "$BRIDGE" up
        ip netns exec "$ns" ip link set lo up
        ip netns exec "$ns" ip addr show dev eth0 | grep "inet $addr/" >/dev/null \
            || ip netns exec "$ns" ip addr add "$addr/24" dev eth0
        ip netns exec "$ns" ip link set eth0 up
    done
    write_hosts
    stage_end "network: bridge $BRIDGE $CTLD_ADDR/24; $(for n in $(node_names); do printf '%s=%s ' "$n" "$(node_addr "$n")"; done)"
}

# /etc/hosts without the block write_hosts adds
hosts_without_block() {
    awk -v b="$HOSTS_BEGIN" -v e="$HOSTS_END" '$0 == b {skip = 1} !skip {print} $0 == e {skip = 0}' /etc/hosts
}

write_hosts() {
    local block tmp n
    block=$(printf '%s\n' "$HOSTS_BEGIN"
            for n in $(node_names); do printf '%s %s\n' "$(node_addr "$n")" "$n"; done
            printf '%s\n' "$HOSTS_END")
    tmp=$(mktemp)
    { hosts_without_block; printf '%s\n' "$block"; } > "$tmp"
    cmp -s "$tmp" /etc/hosts || cat "$tmp" > /etc/hosts   # in place: /etc/hosts may be a mount
    rm -f "$tmp"
}

# prune_nodes: nodes of an earlier, larger DETFLOW_SLURM_NODES: slurmd stopped, netns gone
prune_nodes() {
    local n pids
    for n in $(existing_nodes); do
        (( ${n#node} <= NODES )) && continue
        stop_pidfile "slurmd $n (beyond DETFLOW_SLURM_NODES=$NODES)" "$RUN/slurmd-$n.pid" slurmd
        if [[ -e /run/netns/$(netns_of "$n") ]]; then
            pids=$(ip netns pids "$(netns_of "$n")" 2>/dev/null | tr '\n' ' ')
            [[ -n ${pids// /} ]] && kill -KILL $pids 2>/dev/null || true
            ip netns del "$(netns_of "$n")" 2>/dev/null || true
        fi
        ip link del "$(veth_of "$n")" 2>/dev/null || true
    done
}

remove_network() {
    stage_begin
    local n ns pids
    for n in $(existing_nodes); do
        ns=$(netns_of "$n")
        if [[ -e /run/netns/$ns ]]; then
            # what still runs there (job steps of a killed slurmd) goes with the node
            pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
            [[ -n ${pids// /} ]] && kill -KILL $pids 2>/dev/null || true
            ip netns del "$ns" 2>/dev/null || true
        fi
        ip link del "$(veth_of "$n")" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    if grep -qx "$HOSTS_BEGIN" /etc/hosts 2>/dev/null; then
        local tmp; tmp=$(mktemp)
        hosts_without_block > "$tmp" && cat "$tmp" > /etc/hosts
        rm -f "$tmp"
    fi
    stage_end "network: nodes' namespaces, veths, bridge $BRIDGE and /etc/hosts names removed"
}

# ----------------------------------------------------------------- config ---
# write_if_changed FILE MODE: stdin -> FILE; returns 0 if content changed.
write_if_changed() {
    local f=$1 mode=$2 tmp
    tmp=$(mktemp)
    cat > "$tmp"
    if [[ -f $f ]] && cmp -s "$tmp" "$f"; then
        rm -f "$tmp"
        chmod "$mode" "$f"
        return 1
    fi
    install -m "$mode" -o root -g root "$tmp" "$f"
    rm -f "$tmp"
    return 0
}

SLURM_CONF_CHANGED=0
DBD_CONF_CHANGED=0

write_configs() {
    stage_begin
    mkdir -p "$ETC" "$RUN" "$LOG" "$ROOT/ctld" "$ROOT/d" "$FAKEDEV"
    local n
    for n in $(node_names); do mkdir -p "$ROOT/d/$n"; done
    chmod 755 "$ROOT" "$RUN" "$LOG"
    # fake GPUs: gres/gpu drops devices whose File does not exist
    local i
    for i in 0 1; do
        [[ -e $FAKEDEV/nvidia$i ]] || ln -sf /dev/null "$FAKEDEV/nvidia$i"
    done

    local cpus mem_mb real_mb
    cpus=$(nproc)
    mem_mb=$(free -m | awk '/^Mem:/{print $2}')
    # headroom: 10% or at least 512 MB, so slurmd never reports < RealMemory
    real_mb=$(( mem_mb - (mem_mb / 10 > 512 ? mem_mb / 10 : 512) ))
    ((real_mb > 0)) || real_mb=$mem_mb

    if write_if_changed "$ETC/slurm.conf" 644 <<EOF
# Generated by scripts/local-slurm.sh — $NODES-node test cluster for detflow, one
# machine: each slurmd in its own net+UTS namespace on bridge $BRIDGE ($NET.0/24).
ClusterName=$CLUSTER
SlurmctldHost=localhost($CTLD_ADDR)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
MailProg=/bin/true
MpiDefault=none

StateSaveLocation=$ROOT/ctld
SlurmdSpoolDir=$ROOT/d/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info

ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=1
PriorityType=priority/basic
JobRequeue=1
ReturnToService=1

SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
TCPTimeout=2
InactiveLimit=0
KillWait=5
MinJobAge=10
WaitTime=0
UnkillableStepTimeout=60

AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$CTLD_ADDR
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none

GresTypes=gpu
$(node_lines "CPUs=$cpus RealMemory=$real_mb Gres=gpu:2 State=UNKNOWN")
PartitionName=debug Nodes=$(node_list) Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:2
PartitionName=gpu Nodes=$(node_list) Default=NO MaxTime=INFINITE State=UP
EOF
    then SLURM_CONF_CHANGED=1; fi

    if write_if_changed "$ETC/gres.conf" 644 <<EOF
# Generated by scripts/local-slurm.sh — fake GPUs (symlinks to /dev/null).
AutoDetect=off
NodeName=$(node_list) Name=gpu File=$FAKEDEV/nvidia[0-1]
EOF
    then SLURM_CONF_CHANGED=1; fi

    if write_if_changed "$ETC/slurmdbd.conf" 600 <<EOF
# Generated by scripts/local-slurm.sh
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
    then DBD_CONF_CHANGED=1; fi
    chown root:root "$ETC/slurmdbd.conf"
    chmod 600 "$ETC/slurmdbd.conf"
    stage_end "config: $ETC/{slurm,gres,slurmdbd}.conf ($NODES nodes $(node_list), CPUs=$cpus RealMemory=${real_mb}MB each, changed: slurm=$SLURM_CONF_CHANGED dbd=$DBD_CONF_CHANGED)"
}

# ------------------------------------------------------------------ munge ---
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    stage_begin
    if pid_alive "$MUNGE_PID" && munge_ok; then
        stage_end "munged: already running (pid $(cat "$MUNGE_PID"))"
        return 0
    fi
    need_root "starting munged"
    install -d -m 0700 -o munge -g munge /etc/munge /var/log/munge
    install -d -m 0711 -o munge -g munge /var/lib/munge
    install -d -m 0755 -o munge -g munge /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile=/etc/munge/munge.key --force
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    rm -f "$MUNGE_PID" /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock 2>/dev/null || true
    runuser -u munge -- /usr/sbin/munged </dev/null 9>&- >>"$LOG/munged.out" 2>&1 \
        || { tail_log /var/log/munge/munged.log "$LOG/munged.out"; die "munged failed to start"; }
    wait_for "munged to answer" /var/log/munge/munged.log -- munge_ok
    stage_end "munged: started (pid $(cat "$MUNGE_PID" 2>/dev/null || echo '?'))"
}

# ---------------------------------------------------------------- mariadb ---
sql() { mariadb --no-defaults --socket="$DBSOCK" -u root -N -B "$@"; }
db_ok() { sql -e 'SELECT 1' >/dev/null 2>&1; }

start_mariadb() {
    stage_begin
    if pid_alive "$DBPID" && db_ok; then
        stage_end "mariadbd: already running (pid $(cat "$DBPID"))"
        return 0
    fi
    need_root "starting mariadbd"
    if [[ ! -d $DBDIR/mysql ]]; then
        install -d -m 0750 -o mysql -g mysql "$DBDIR"
        mariadb-install-db --no-defaults --user=mysql --datadir="$DBDIR" \
            --auth-root-authentication-method=socket --skip-test-db \
            >"$LOG/mariadb-install-db.log" 2>&1 \
            || { tail_log "$LOG/mariadb-install-db.log"; die "mariadb-install-db failed"; }
        say "mariadbd: initialised data dir $DBDIR ($(elapsed "$STAGE_T"))"
    fi
    chown -R mysql:mysql "$DBDIR"
    install -d -m 0755 -o mysql -g mysql "$DBRUN"
    [[ -e $LOG/mariadbd.log ]] || install -m 0640 -o mysql -g mysql /dev/null "$LOG/mariadbd.log"
    rm -f "$DBSOCK" "$DBSOCK.lock" "$DBPID"
    setsid mariadbd --no-defaults --user=mysql --datadir="$DBDIR" \
        --socket="$DBSOCK" --pid-file="$DBPID" --skip-networking \
        --log-error="$LOG/mariadbd.log" --innodb-lock-wait-timeout=900 \
        --innodb-buffer-pool-size=256M \
        </dev/null 9>&- >>"$LOG/mariadbd.out" 2>&1 &
    wait_for "mariadbd to accept connections on $DBSOCK" "$LOG/mariadbd.log" "$LOG/mariadbd.out" -- db_ok
    sql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db"
    stage_end "mariadbd: started (pid $(cat "$DBPID" 2>/dev/null || echo '?'), socket $DBSOCK)"
}

# --------------------------------------------------------------- slurmdbd ---
dbd_ok() { timeout 10 sacctmgr -n -P show cluster format=cluster >/dev/null 2>&1; }

start_slurmdbd() {
    stage_begin
    if pid_alive "$RUN/slurmdbd.pid" && ((DBD_CONF_CHANGED == 0)) && dbd_ok; then
        stage_end "slurmdbd: already running (pid $(cat "$RUN/slurmdbd.pid"))"
    else
        need_root "starting slurmdbd"
        if pid_alive "$RUN/slurmdbd.pid"; then stop_pidfile slurmdbd "$RUN/slurmdbd.pid"; fi
        rm -f "$RUN/slurmdbd.pid"
        setsid slurmdbd </dev/null 9>&- >>"$LOG/slurmdbd.out" 2>&1 \
            || { tail_log "$LOG/slurmdbd.log" "$LOG/slurmdbd.out"; die "slurmdbd failed to start"; }
        wait_for "slurmdbd to answer sacctmgr" "$LOG/slurmdbd.log" "$LOG/slurmdbd.out" -- dbd_ok
        stage_end "slurmdbd: started (pid $(cat "$RUN/slurmdbd.pid" 2>/dev/null || echo '?'))"
    fi
    stage_begin
    if ! sacctmgr -n -P show cluster format=cluster | grep -x "$CLUSTER" >/dev/null; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
    # `add cluster` creates account root + user root; add a plain account too
    if ! sacctmgr -n -P show account format=account | grep -x detflow >/dev/null; then
        sacctmgr -i add account detflow cluster="$CLUSTER" description=detflow organization=detflow >/dev/null
    fi
    if ! sacctmgr -n -P show assoc where user=root account=detflow cluster="$CLUSTER" format=user | grep -x root >/dev/null; then
        sacctmgr -i add user root account=detflow cluster="$CLUSTER" >/dev/null
    fi
    stage_end "accounting: cluster '$CLUSTER', accounts root+detflow, user root registered"
}

# -------------------------------------------------------------- slurmctld ---
ctld_ok() { timeout 10 scontrol ping 2>/dev/null | grep 'is UP' >/dev/null; }
# compact state: "idle", "mix", "alloc"; a trailing "*" means slurmd has not
# (re)registered yet, "down"/"drain" need a resume
node_state() { timeout 10 sinfo -h -N -n "$1" -o %t 2>/dev/null | head -n1; }
SLURMD_SINCE=0   # nodes are ready once their slurmd registered at/after this epoch
node_ready() {
    local s t
    s=$(node_state "$1")
    [[ $s == idle || $s == mix || $s == alloc || $s == comp ]] || return 1
    t=$(timeout 10 scontrol -o show node "$1" 2>/dev/null | grep -o 'SlurmdStartTime=[^ ]*' | cut -d= -f2)
    [[ -n $t && $t != None ]] || return 1
    (( $(date -d "$t" +%s) >= SLURMD_SINCE ))
}

start_slurmctld() {
    local extra=("$@")
    stage_begin
    conf_newer_than "$RUN/slurmctld.pid" && SLURM_CONF_CHANGED=1
    if pid_alive "$RUN/slurmctld.pid" && ((SLURM_CONF_CHANGED == 0)) && ctld_ok; then
        stage_end "slurmctld: already running (pid $(cat "$RUN/slurmctld.pid"))"
        return 0
    fi
    need_root "starting slurmctld"
    if pid_alive "$RUN/slurmctld.pid"; then stop_pidfile slurmctld "$RUN/slurmctld.pid"; fi
    rm -f "$RUN/slurmctld.pid"
    setsid slurmctld "${extra[@]}" </dev/null 9>&- >>"$LOG/slurmctld.out" 2>&1 \
        || { tail_log "$LOG/slurmctld.log" "$LOG/slurmctld.out"; die "slurmctld failed to start"; }
    wait_for "slurmctld to answer 'scontrol ping'" "$LOG/slurmctld.log" "$LOG/slurmctld.out" -- ctld_ok
    stage_end "slurmctld: started (pid $(cat "$RUN/slurmctld.pid" 2>/dev/null || echo '?'))"
}

slurmd_pidfile() { echo "$RUN/slurmd-$1.pid"; }
# conf_newer_than PIDFILE: slurm.conf changed after that daemon started (e.g. an
# earlier start wrote it and then failed): it must restart to read it
conf_newer_than() { [[ -e $1 && $ETC/slurm.conf -nt $1 ]]; }

# stop_legacy_slurmd: the one-node cluster's slurmd (node "localhost", no netns)
stop_legacy_slurmd() {
    if [[ -e $RUN/slurmd.pid ]]; then stop_pidfile "slurmd (one-node layout)" "$RUN/slurmd.pid"; fi
}

# start_slurmd NODE: slurmd in NODE's network namespace (nsenter: the mount
# namespace stays the host's) and a UTS namespace of its own named NODE.
start_slurmd() {
    local n=$1 pf
    pf=$(slurmd_pidfile "$n")
    stage_begin
    if pid_alive "$pf" slurmd && ((SLURM_CONF_CHANGED == 0)); then
        stage_end "slurmd $n: already running (pid $(cat "$pf"))"
        return 0
    fi
    need_root "starting slurmd"
    if pid_alive "$pf" slurmd; then stop_pidfile "slurmd $n" "$pf" slurmd; fi
    rm -f "$pf"
    nsenter --net="/run/netns/$(netns_of "$n")" -- unshare --uts -- \
        /bin/sh -c 'hostname "$1" && exec setsid slurmd -N "$1"' sh "$n" \
        </dev/null 9>&- >>"$LOG/slurmd-$n.out" 2>&1 \
        || { tail_log "$LOG/slurmd-$n.log" "$LOG/slurmd-$n.out"; die "slurmd $n failed to start"; }
    stage_end "slurmd $n: started in netns $(netns_of "$n") ($(node_addr "$n"))"
}

start_nodes() {
    local n st
    SLURMD_SINCE=$(( $(date +%s) - 1 ))
    local restarted=()
    for n in $(node_names); do
        pid_alive "$(slurmd_pidfile "$n")" slurmd && ((SLURM_CONF_CHANGED == 0)) || restarted+=("$n")
        start_slurmd "$n"
    done
    stage_begin
    for n in $(node_names); do
        st=$(node_state "$n")
        if [[ $st == down* || $st == drain* || $st == drng* || $st == fail* ]]; then
            # e.g. left DOWN by an earlier unclean stop, or by a test
            scontrol update nodename="$n" state=resume >/dev/null 2>&1 || true
        fi
    done
    for n in $(node_names); do
        if [[ " ${restarted[*]} " != *" $n "* ]]; then
            # not restarted now: registered earlier, only needs to be up
            if ! (SLURMD_SINCE=0 wait_for "node '$n' to become idle" "$LOG/slurmd-$n.log" "$LOG/slurmctld.log" -- node_ready "$n"); then
                scontrol show node "$n" >&2 2>/dev/null || true
                exit 1
            fi
        elif ! (wait_for "node '$n' to register" "$LOG/slurmd-$n.log" "$LOG/slurmctld.log" -- node_ready "$n"); then
            scontrol show node "$n" >&2 2>/dev/null || true
            exit 1
        fi
    done
    stage_end "nodes: $(for n in $(node_names); do printf '%s %s, ' "$n" "$(node_state "$n")"; done)registered"
}

# ----------------------------------------------------------------- verbs ---
take_lock() {
    # start/stop/reset are serialised: the test suites of several sessions may call
    # start. The daemons are started with 9>&-: they must not inherit (hold) the lock.
    exec 9>"$LOCK"
    flock -w 120 9 || die "another local-slurm.sh has held $LOCK for over 120 s"
}

do_start() {
    check_nodes
    say "start: bringing up $NODES-node Slurm cluster '$CLUSTER' (state in $ROOT)"
    install_packages
    need_root_or_running
    take_lock
    write_configs
    prune_nodes
    setup_network
    start_munge
    start_mariadb
    start_slurmdbd
    stop_legacy_slurmd
    start_slurmctld "$@"
    start_nodes
    say "start: cluster is up ($(elapsed "$T0") total); partitions: $(sinfo -h -o %P | tr '\n' ' ')nodes: $(sinfo -h -N -o %N | sort -u | tr '\n' ' ')"
}

need_root_or_running() {
    if [[ $(id -u) -ne 0 ]]; then
        if ! { pid_alive "$RUN/slurmctld.pid" && ctld_ok; }; then
            die "cluster not running and not root: run 'sudo $0 start'"
        fi
        say "start: not root, cluster already running — nothing to do"
        do_status
        exit 0
    fi
}

stop_slurm() {
    stop_pidfile slurmctld "$RUN/slurmctld.pid"
    local n
    for n in $(existing_nodes); do stop_pidfile "slurmd $n" "$(slurmd_pidfile "$n")" slurmd; done
    stop_legacy_slurmd
    stop_pidfile slurmdbd "$RUN/slurmdbd.pid"
}

do_stop() {
    say "stop: stopping the Slurm cluster"
    [[ $(id -u) -eq 0 ]] || die "stop needs root"
    take_lock
    stop_slurm
    stop_pidfile mariadbd "$DBPID"
    stop_pidfile munged "$MUNGE_PID"
    remove_network
    say "stop: done ($(elapsed "$T0") total)"
}

do_status() {
    check_nodes
    local rc=0 name pf n
    for name in munged mariadbd slurmdbd slurmctld; do
        case $name in
            munged) pf=$MUNGE_PID ;;
            mariadbd) pf=$DBPID ;;
            *) pf=$RUN/$name.pid ;;
        esac
        if pid_alive "$pf"; then
            say "$name: running (pid $(cat "$pf"))"
        else
            say "$name: NOT running"; rc=1
        fi
    done
    for n in $(node_names); do
        pf=$(slurmd_pidfile "$n")
        if pid_alive "$pf" slurmd && [[ -e /run/netns/$(netns_of "$n") ]]; then
            say "slurmd $n: running (pid $(cat "$pf"), netns $(netns_of "$n"), $(node_addr "$n"))"
        else
            say "slurmd $n: NOT running"; rc=1
        fi
    done
    if command -v sinfo >/dev/null 2>&1 && timeout 10 sinfo >/dev/null 2>&1; then
        timeout 10 sinfo
        timeout 10 sinfo -h -N -o '%N %t %E' | sort -u | while read -r n st reason; do
            [[ $reason == none ]] && reason=
            say "node $n: $st${reason:+ ($reason)}"
        done
    else
        say "sinfo: slurmctld not reachable"; rc=1
    fi
    if command -v sacct >/dev/null 2>&1 && timeout 10 sacct -n -X -S now-1hours >/dev/null 2>&1; then
        say "sacct: works"
    else
        say "sacct: NOT working"; rc=1
    fi
    return $rc
}

do_reset() {
    check_nodes
    need_root "reset"
    take_lock
    say "reset: stopping slurm daemons, dropping accounting database"
    stop_slurm
    write_configs
    setup_network
    start_munge
    start_mariadb
    stage_begin
    sql -e "DROP DATABASE IF EXISTS slurm_acct_db; CREATE DATABASE slurm_acct_db"
    stage_end "reset: accounting database slurm_acct_db dropped and recreated"
    start_slurmdbd
    start_slurmctld -c   # -c: clear saved job state
    start_nodes
    say "reset: done ($(elapsed "$T0") total)"
}

case "${1:-}" in
    start) shift; do_start "$@" ;;
    stop) do_stop ;;
    status) if do_status; then exit 0; else exit 1; fi ;;
    reset) do_reset ;;
    *) echo "usage: $0 start|stop|status|reset" >&2; exit 2 ;;
esac
