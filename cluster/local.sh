#!/usr/bin/env bash
# A multi-node Ray cluster on ONE Linux machine, for trying multi-node behaviour
# (placement across nodes, node failures, shared storage) without a cloud account.
#
#   cluster/local.sh up [--workers N] [--cpus-per-worker C] [--head-cpus H]
#                       [--object-store-mb M] [--state-dir DIR] [--timeout S]
#   cluster/local.sh status [--state-dir DIR]
#   cluster/local.sh add-node [--cpus C] [--state-dir DIR] [--timeout S]
#   cluster/local.sh stop-node N [--state-dir DIR]
#   cluster/local.sh kill-node N [--state-dir DIR]
#   cluster/local.sh down [--state-dir DIR] [--keep-logs]
#
# Nodes are numbered: 0 is the head, 1, 2, ... the workers in the order they were
# started (numbers are never reused). add-node joins one more worker (a node the
# autoscaler brings up), stop-node N stops worker N the way `down` stops a node
# (a node drained and shut down), kill-node N SIGKILLs every process of worker N
# at once (a reclaimed spot instance, a machine that loses power). The head can
# only go with the whole cluster (`down`).
#
# Each node is its own `ray start --block` process in its own session (setsid),
# with its own CPU count, temp dir and ports, so several nodes -- and other Ray
# instances on the machine -- coexist. Everything a node runs (raylet, agents,
# Ray workers, which get process groups of their own) stays in that session, so
# the commands signal exactly the sessions recorded in the state dir; they never
# run `ray stop`, which would kill every Ray instance of this user on the machine.
#
# Security: token authentication is always on, with a fresh token per cluster
# (state dir, mode 600), and the dashboard/Jobs API listens on 127.0.0.1 only.
# Ray on Linux replaces a loopback --node-ip-address with the machine's address
# and its gRPC servers (GCS, raylets) listen on all interfaces; the token is what
# keeps other hosts from running code through them. On an untrusted network,
# also firewall the ports listed in `status`.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${CMCL_LOCAL_CLUSTER_DIR:-$REPO_ROOT/.cache/local-cluster}"
WORKERS=2
CPUS_PER_WORKER=1
CPUS=""
HEAD_CPUS=0
OBJECT_STORE_MB=256
TIMEOUT_S=90
KEEP_LOGS=0
NODE_ARG=""
# Ports each node needs; a head also needs GCS, dashboard and Ray Client ports.
NODE_PORTS=6
HEAD_PORTS=3

die() {
    echo "local.sh: $*" >&2
    exit 2
}

usage() {
    sed -n '/^#   cluster\/local.sh /,/^#$/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit "${1:-0}"
}

positive_int() { # name value minimum
    [[ "$2" =~ ^[0-9]+$ ]] && (($2 >= $3)) || die "$1 must be an integer >= $3, got '$2'"
}

parse_options() { # command args...
    local command="$1"
    shift
    while (($#)); do
        case "$1" in
        --workers | --cpus-per-worker | --cpus | --head-cpus | --object-store-mb | --state-dir | --timeout)
            (($# >= 2)) || die "$1 needs a value"
            ;;&
        --workers) WORKERS="${2:-}"; shift 2 ;;
        --cpus-per-worker) CPUS_PER_WORKER="${2:-}"; shift 2 ;;
        --cpus) CPUS="${2:-}"; shift 2 ;;
        --head-cpus) HEAD_CPUS="${2:-}"; shift 2 ;;
        --object-store-mb) OBJECT_STORE_MB="${2:-}"; shift 2 ;;
        --state-dir) STATE_DIR="${2:-}"; shift 2 ;;
        --timeout) TIMEOUT_S="${2:-}"; shift 2 ;;
        --keep-logs) KEEP_LOGS=1; shift ;;
        -h | --help) usage 0 ;;
        --*) die "unknown option '$1' (valid: --workers, --cpus-per-worker, --cpus, --head-cpus, --object-store-mb, --state-dir, --timeout, --keep-logs)" ;;
        *)
            [[ "$command" == stop-node || "$command" == kill-node ]] && [[ -z "$NODE_ARG" ]] ||
                die "unexpected argument '$1' for '$command'"
            NODE_ARG="$1"
            shift
            ;;
        esac
    done
    positive_int --workers "$WORKERS" 0
    positive_int --cpus-per-worker "$CPUS_PER_WORKER" 1
    [[ -z "$CPUS" ]] || positive_int --cpus "$CPUS" 1
    positive_int --head-cpus "$HEAD_CPUS" 0
    positive_int --object-store-mb "$OBJECT_STORE_MB" 80
    positive_int --timeout "$TIMEOUT_S" 1
    [[ -n "$STATE_DIR" ]] || die "--state-dir must not be empty"
}

find_python() {
    # The `ray` on PATH decides which Python runs the helpers below.
    command -v ray >/dev/null || die "no 'ray' on PATH; activate the environment where cmcl is installed"
    PYTHON="$(dirname "$(command -v ray)")/python"
    [[ -x "$PYTHON" ]] || PYTHON=python3
}

# The nodes started so far, one "index role pid node-manager-port state" per line,
# head (index 0) first; state is alive, stopped or killed, as this script left it.
recorded_nodes() { [[ -f "$STATE_DIR/nodes" ]] && cat "$STATE_DIR/nodes"; true; }
node_pid() { recorded_nodes | awk -v n="$1" '$1 == n {print $3}'; }

set_node_state() { # index state
    local file="$STATE_DIR/nodes"
    awk -v n="$1" -v s="$2" '$1 == n {$5 = s} {print}' "$file" >"$file.new"
    mv "$file.new" "$file"
}

# A pid is ours only while it is alive AND its command line names our Ray temp
# dir: a recycled pid belonging to something else is never signalled.
is_ours() {
    local pid="$1" tmp
    tmp="$(cat "$STATE_DIR/ray_tmp" 2>/dev/null)" || return 1
    [[ -n "$pid" && -n "$tmp" && -r "/proc/$pid/cmdline" ]] &&
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$tmp"
}

any_running() {
    local n role pid rest
    while read -r n role pid rest; do
        is_ours "$pid" && return 0
    done < <(recorded_nodes)
    return 1
}

head_running() { is_ours "$(node_pid 0)"; }

require_cluster() {
    head_running || die "no local cluster running from $STATE_DIR; start one with 'cluster/local.sh up'"
}

# Every live process of the node whose `ray start --block` leader is $1: its
# session (Ray workers get process groups of their own, but stay in the session).
# Zombies are left out: they are dead already, waiting for a parent to reap them.
session_pids() { ps -o pid=,stat= --sid "$1" | awk '$2 !~ /^Z/ {print $1}' || true; }
session_empty() { ! ps -o pid= --sid "$1" >/dev/null; } # zombies included

load_env() {
    # shellcheck disable=SC1091
    source "$STATE_DIR/cluster.env"
    # shellcheck disable=SC1091
    [[ ! -f "$STATE_DIR/settings" ]] || source "$STATE_DIR/settings"
    RAY_TMP="$(cat "$STATE_DIR/ray_tmp")"
}

free_ports() { # count -> space-separated free TCP ports on 127.0.0.1
    "$PYTHON" - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:  # all bound at once, so the ports are distinct
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

start_node() { # index role log-name node-ports(6) -- extra ray-start-args...
    local index="$1" role="$2" log="$3" manager_port="$4"
    shift 3
    local node_args=(
        --temp-dir="$RAY_TMP/n$index"
        --node-manager-port="$1"
        --object-manager-port="$2"
        --dashboard-agent-listen-port="$3"
        --dashboard-agent-grpc-port="$4"
        --runtime-env-agent-port="$5"
        --metrics-export-port="$6"
    )
    shift 6
    # setsid: the node gets its own session and process group, which the
    # commands signal as one.
    setsid ray start --block --disable-usage-stats \
        --object-store-memory=$((OBJECT_STORE_MB * 1024 * 1024)) \
        --min-worker-port=0 --max-worker-port=0 "${node_args[@]}" "$@" \
        >"$STATE_DIR/logs/$log.log" 2>&1 </dev/null &
    echo "$index $role $! $manager_port alive" >>"$STATE_DIR/nodes"
    STARTED_PID=$!
}

wait_for_nodes() { # expected-alive-nodes [pid: give up as soon as it exits] [node-manager-port]
    # `timeout`: ray.init can block in its own GCS retries past our deadline.
    timeout -k 5 $((${TIMEOUT_S%.*} + 30)) \
        "$PYTHON" - "$RAY_ADDRESS" "$1" "$TIMEOUT_S" "${2:-0}" "${3:-0}" <<'EOF'
import os, socket, sys, time
import ray
address, expected, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
watched_pid, node_port = int(sys.argv[4]), int(sys.argv[5])
deadline = time.monotonic() + timeout
def check_watched(what):
    if not watched_pid:
        return
    try:
        os.kill(watched_pid, 0)
    except ProcessLookupError:
        sys.exit(f"`ray start` (pid {watched_pid}) exited before {what}")
host, port = address.rsplit(":", 1)
while True:  # ray.init blocks long in its own retries: first wait for the GCS port
    check_watched(f"its GCS at {address} answered")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"head at {address} did not come up within {timeout:.0f} s")
        time.sleep(0.5)
while True:
    check_watched(f"its GCS at {address} answered")
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        break
    except Exception as error:  # GCS not up yet
        if time.monotonic() > deadline:
            sys.exit(f"head at {address} did not come up within {timeout:.0f} s: {error}")
        time.sleep(1)
while True:
    nodes = ray.nodes()
    if node_port:
        if any(n["Alive"] and n["NodeManagerPort"] == node_port for n in nodes):
            break
    elif sum(node["Alive"] for node in nodes) >= expected:
        break
    check_watched("the node joined")
    if time.monotonic() > deadline:
        alive = sum(node["Alive"] for node in nodes)
        sys.exit(f"only {alive} of {expected} nodes joined within {timeout:.0f} s")
    time.sleep(0.5)
ray.shutdown()
EOF
}

cmd_up() {
    find_python
    if any_running; then
        die "a cluster from $STATE_DIR is already running; run 'cluster/local.sh down' first"
    fi
    # A cluster that died without `down` leaves its temp dir (and maybe stray
    # processes carrying its unique path): clear those first.
    [[ -f "$STATE_DIR/nodes" ]] && cmd_down_quiet
    rm -rf "$STATE_DIR"
    mkdir -p "$STATE_DIR/logs"
    # Ray's Unix socket paths must stay under ~107 characters: keep temp dirs short.
    RAY_TMP="$(mktemp -d "${TMPDIR:-/tmp}/cmcl-lc.XXXXXX")"
    echo "$RAY_TMP" >"$STATE_DIR/ray_tmp"
    # What add-node gives a new worker unless told otherwise.
    printf 'CPUS_PER_WORKER=%s\nOBJECT_STORE_MB=%s\n' "$CPUS_PER_WORKER" "$OBJECT_STORE_MB" \
        >"$STATE_DIR/settings"

    (umask 077 && "$PYTHON" -c 'import secrets; print(secrets.token_hex(32))' >"$STATE_DIR/auth_token")
    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$STATE_DIR/auth_token"

    local ports
    read -r -a ports <<<"$(free_ports $((HEAD_PORTS + NODE_PORTS * (WORKERS + 1))))"
    local gcs_port="${ports[0]}" dashboard_port="${ports[1]}" client_port="${ports[2]}"
    export RAY_ADDRESS="127.0.0.1:$gcs_port"
    cat >"$STATE_DIR/cluster.env" <<EOF
export RAY_ADDRESS=$RAY_ADDRESS
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=$STATE_DIR/auth_token
export CMCL_LOCAL_DASHBOARD=http://127.0.0.1:$dashboard_port
EOF

    local i
    for ((i = 0; i <= WORKERS; i++)); do
        local node_ports=("${ports[@]:HEAD_PORTS+NODE_PORTS*i:NODE_PORTS}")
        if ((i == 0)); then
            # Ray gives a new node's raylet a fixed 30 s to register; a cold start
            # (first run of a fresh environment, a loaded machine) can take longer
            # and `ray start` then exits. One retry, on the same ports, covers that.
            local attempt head_pid
            for attempt in 1 2; do
                start_node 0 head head "${node_ports[@]}" --head --node-ip-address=127.0.0.1 \
                    --port="$gcs_port" --num-cpus="$HEAD_CPUS" --dashboard-host=127.0.0.1 \
                    --dashboard-port="$dashboard_port" --ray-client-server-port="$client_port"
                head_pid="$STARTED_PID"
                # Workers can only join once the GCS answers.
                wait_for_nodes 1 "$head_pid" && break
                if ((attempt == 2)); then
                    cmd_down_quiet
                    die "head failed twice; see $STATE_DIR/logs/head.log"
                fi
                echo "local.sh: the head did not start (log: $STATE_DIR/logs/head.log.1); retrying once" >&2
                # Its GCS and raylet may outlive the `ray start` that exited: end the
                # whole session and anything else running from its temp dir.
                stop_session "$head_pid"
                kill -KILL -- "-$head_pid" 2>/dev/null || true
                pkill -KILL -f -- "$RAY_TMP/n0" 2>/dev/null || true
                sleep 1
                rm -rf "$RAY_TMP/n0"
                mv "$STATE_DIR/logs/head.log" "$STATE_DIR/logs/head.log.1"
                sed -i '/^0 /d' "$STATE_DIR/nodes"
            done
        else
            start_node "$i" worker "worker$i" "${node_ports[@]}" --address="$RAY_ADDRESS" \
                --num-cpus="$CPUS_PER_WORKER"
        fi
    done
    wait_for_nodes $((WORKERS + 1)) || { cmd_down_quiet; die "workers failed; see $STATE_DIR/logs/"; }

    cat <<EOF
Local Ray cluster up: head ($HEAD_CPUS CPU) + $WORKERS worker node(s) x $CPUS_PER_WORKER CPU.
  address:    $RAY_ADDRESS        (pass as --address)
  dashboard:  http://127.0.0.1:$dashboard_port  (token-protected; 'ray get-auth-token' prints the token)
Clients need the cluster's token; load it with:
  source $STATE_DIR/cluster.env
Then e.g.:
  cmcl study run studies/quickstart.yaml --address \$RAY_ADDRESS --storage /tmp/cmcl-studies
  RAY_ADDRESS=\$CMCL_LOCAL_DASHBOARD ray job submit -- python -c 'import ray; ray.init(); print(ray.nodes())'
Lose and regain nodes with: cluster/local.sh kill-node 1 / stop-node 1 / add-node
Stop it with: cluster/local.sh down
EOF
}

cmd_add_node() {
    find_python
    require_cluster
    load_env
    local cpus="${CPUS:-$CPUS_PER_WORKER}" index ports
    index=$(($(recorded_nodes | awk 'max < $1 {max = $1} END {print max + 0}') + 1))
    read -r -a ports <<<"$(free_ports "$NODE_PORTS")"
    start_node "$index" worker "worker$index" "${ports[@]}" --address="$RAY_ADDRESS" --num-cpus="$cpus"
    if ! wait_for_nodes 0 "$STARTED_PID" "${ports[0]}"; then
        stop_session "$STARTED_PID"
        set_node_state "$index" stopped
        die "worker node $index did not join; see $STATE_DIR/logs/worker$index.log"
    fi
    echo "Worker node $index joined: pid $STARTED_PID, $cpus CPU, log $STATE_DIR/logs/worker$index.log"
}

require_worker() { # command index -> NODE_PID: refuses anything but a running worker
    local command="$1" index="$2" line state
    [[ -n "$index" ]] || die "$command needs a worker node number, e.g. 'cluster/local.sh $command 1'"
    [[ "$index" =~ ^[0-9]+$ ]] || die "node number must be a whole number (1, 2, ...), got '$index'"
    index=$((10#$index))
    ((index != 0)) || die "node 0 is the head, which cannot be stopped or killed on its own; 'cluster/local.sh down' stops the whole cluster"
    require_cluster
    line="$(recorded_nodes | awk -v n="$index" '$1 == n')"
    [[ -n "$line" ]] ||
        die "no worker node $index in this cluster (workers: $(recorded_nodes | awk '$1 > 0 {printf "%s%s", sep, $1; sep = " "}'))"
    read -r _ _ NODE_PID _ state <<<"$line"
    [[ "$state" == alive ]] || die "worker node $index is already $state"
    is_ours "$NODE_PID" || die "worker node $index is not running (its process $NODE_PID has exited)"
    NODE_INDEX="$index"
}

cmd_stop_node() {
    require_worker stop-node "$NODE_ARG"
    stop_session "$NODE_PID"
    kill_stragglers "$(cat "$STATE_DIR/ray_tmp")/n$NODE_INDEX/"
    set_node_state "$NODE_INDEX" stopped
    echo "Worker node $NODE_INDEX stopped (pid $NODE_PID)."
}

cmd_kill_node() {
    require_worker kill-node "$NODE_ARG"
    local pids waited=0 count
    pids="$(session_pids "$NODE_PID")"
    count="$(wc -w <<<"$pids")"
    # One kill for the whole session, as when the machine disappears; then
    # anything forked in between, and anything that left the session yet still
    # runs from the node's temp dir.
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    while [[ -n "$(session_pids "$NODE_PID")" ]] && ((waited < 50)); do
        # shellcheck disable=SC2046
        kill -KILL $(session_pids "$NODE_PID") 2>/dev/null || true
        sleep 0.1
        waited=$((waited + 1))
    done
    kill_stragglers "$(cat "$STATE_DIR/ray_tmp")/n$NODE_INDEX/"
    set_node_state "$NODE_INDEX" killed
    echo "Worker node $NODE_INDEX killed: SIGKILL to its $count process(es) (session $NODE_PID)."
}

stop_session() { # pid: SIGTERM the `ray start --block` leader, which stops its node
    local pid="$1" waited=0
    is_ours "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    # Until the processes are gone and reaped: a zombie still holds its pid.
    while ! session_empty "$pid" && ((waited < 150)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    # Anything alive in the session after 15 s (a hung shutdown) is killed outright.
    if [[ -n "$(session_pids "$pid")" ]]; then
        # shellcheck disable=SC2046
        kill -KILL $(session_pids "$pid") 2>/dev/null || true
    fi
}

kill_stragglers() { # path: processes that left their session still carry it
    local straggler
    for straggler in $(pgrep -f -- "$1" || true); do
        [[ "$straggler" != "$$" ]] && kill -KILL "$straggler" 2>/dev/null || true
    done
}

cmd_down_quiet() {
    local n role pid rest ray_tmp
    # Workers first, head last, so no raylet outlives the GCS it reports to.
    while read -r n role pid rest; do
        stop_session "$pid"
    done < <(recorded_nodes | tac)
    ray_tmp="$(cat "$STATE_DIR/ray_tmp" 2>/dev/null || true)"
    if [[ -n "$ray_tmp" ]]; then
        kill_stragglers "$ray_tmp"
        ((KEEP_LOGS)) || rm -rf "$ray_tmp"
    fi
    rm -f "$STATE_DIR/nodes"
}

cmd_down() {
    if [[ ! -f "$STATE_DIR/nodes" ]]; then
        echo "No local cluster recorded in $STATE_DIR; nothing to stop."
        return 0
    fi
    cmd_down_quiet
    if ((KEEP_LOGS)); then
        echo "Local Ray cluster stopped; logs kept in $STATE_DIR/logs and $(cat "$STATE_DIR/ray_tmp")."
    else
        rm -rf "$STATE_DIR"
        echo "Local Ray cluster stopped."
    fi
}

cmd_status() {
    find_python
    if ! any_running; then
        echo "No local cluster running (state dir: $STATE_DIR)."
        return 3
    fi
    load_env
    echo "address: $RAY_ADDRESS   dashboard: $CMCL_LOCAL_DASHBOARD"
    # What this script knows (a node recorded alive whose process is gone died on
    # its own), then Ray's view of the same node, matched by node-manager port.
    local n role pid port state table=""
    while read -r n role pid port state; do
        local procs=0
        if [[ "$state" == alive ]]; then
            if is_ours "$pid"; then procs="$(session_pids "$pid" | wc -l)"; else state=dead; fi
        fi
        table+="$n $role $pid $port $state $procs"$'\n'
    done < <(recorded_nodes)
    if ! head_running; then
        echo "The head (node 0) is not running; 'cluster/local.sh down' cleans up."
        printf '%s' "$table"
        return 0
    fi
    timeout -k 5 60 "$PYTHON" - "$RAY_ADDRESS" "$table" <<'EOF'
import sys
import ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
by_port = {}
for node in ray.nodes():  # a port may have served a dead node before: the live one wins
    if node["Alive"] or node["NodeManagerPort"] not in by_port:
        by_port[node["NodeManagerPort"]] = node
def resources(node):
    shown = {k: v for k, v in node["Resources"].items() if not k.startswith("node:")}
    return ", ".join(
        f"{k}={v:g}" if k in ("CPU", "GPU") else f"{k}={v / 2**30:.2f}GiB"
        for k, v in sorted(shown.items())
    )
print(f"{'node':<5} {'role':<7} {'state':<8} {'pid':<8} {'procs':<6} {'ray node id':<13} "
      f"{'in ray':<7} resources")
for line in sys.argv[2].splitlines():
    index, role, pid, port, state, procs = line.split()
    node = by_port.pop(int(port), None)
    ray_id = node["NodeID"][:12] if node else "-"
    in_ray = ("alive" if node["Alive"] else "dead") if node else "absent"
    shown = resources(node) if node and node["Alive"] else ""
    print(f"{index:<5} {role:<7} {state:<8} {pid:<8} {procs:<6} {ray_id:<13} {in_ray:<7} {shown}")
for node in by_port.values():  # joined by someone else with this cluster's token
    if node["Alive"]:
        print(f"{'?':<5} {'?':<7} {'?':<8} {'?':<8} {'?':<6} {node['NodeID'][:12]:<13} "
              f"{'alive':<7} {resources(node)}")
total = ray.cluster_resources()
print(f"total: CPU={total.get('CPU', 0):g} GPU={total.get('GPU', 0):g}")
EOF
}

(($#)) || usage 2
command="$1"
shift
parse_options "$command" "$@"
# A state dir written by the local.sh before node numbers ("role pid" lines in
# `pids`, head first): the same nodes, numbered in that order.
if [[ -f "$STATE_DIR/pids" && ! -f "$STATE_DIR/nodes" ]]; then
    index=0
    while read -r role pid; do
        port="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | sed -n 's/^--node-manager-port=//p')" || true
        echo "$index $role $pid ${port:-0} alive" >>"$STATE_DIR/nodes"
        index=$((index + 1))
    done <"$STATE_DIR/pids"
    rm -f "$STATE_DIR/pids"
fi
case "$command" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
add-node) cmd_add_node ;;
stop-node) cmd_stop_node ;;
kill-node) cmd_kill_node ;;
-h | --help | help) usage 0 ;;
*) die "unknown command '$command' (valid: up, down, status, add-node, stop-node, kill-node)" ;;
esac
