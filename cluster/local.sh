#!/usr/bin/env bash
# A multi-node Ray cluster on ONE Linux machine, for trying multi-node behaviour
# (placement across nodes, node failures, shared storage) without a cloud account.
#
#   cluster/local.sh up [--workers N] [--cpus-per-worker C] [--head-cpus H]
#                       [--object-store-mb M] [--state-dir DIR] [--timeout S]
#   cluster/local.sh status [--state-dir DIR]
#   cluster/local.sh down [--state-dir DIR] [--keep-logs]
#
# Each node is its own `ray start --block` process in its own session (setsid),
# with its own CPU count, temp dir and ports, so several nodes -- and other Ray
# instances on the machine -- coexist. `down` stops exactly the process groups
# recorded in the state dir; it never runs `ray stop`, which would kill every
# Ray instance of this user on the machine.
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
HEAD_CPUS=0
OBJECT_STORE_MB=256
TIMEOUT_S=90
KEEP_LOGS=0
# Ports each node needs; a head also needs GCS, dashboard and Ray Client ports.
NODE_PORTS=6
HEAD_PORTS=3

die() {
    echo "local.sh: $*" >&2
    exit 2
}

usage() {
    sed -n '5,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

positive_int() { # name value minimum
    [[ "$2" =~ ^[0-9]+$ ]] && (($2 >= $3)) || die "$1 must be an integer >= $3, got '$2'"
}

parse_options() {
    while (($#)); do
        case "$1" in
        --workers) WORKERS="${2:-}"; shift 2 ;;
        --cpus-per-worker) CPUS_PER_WORKER="${2:-}"; shift 2 ;;
        --head-cpus) HEAD_CPUS="${2:-}"; shift 2 ;;
        --object-store-mb) OBJECT_STORE_MB="${2:-}"; shift 2 ;;
        --state-dir) STATE_DIR="${2:-}"; shift 2 ;;
        --timeout) TIMEOUT_S="${2:-}"; shift 2 ;;
        --keep-logs) KEEP_LOGS=1; shift ;;
        -h | --help) usage 0 ;;
        *) die "unknown option '$1' (valid: --workers, --cpus-per-worker, --head-cpus, --object-store-mb, --state-dir, --timeout, --keep-logs)" ;;
        esac
    done
    positive_int --workers "$WORKERS" 0
    positive_int --cpus-per-worker "$CPUS_PER_WORKER" 1
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

# Process ids recorded by `up`, one "role pid" per line, head first.
recorded_pids() { [[ -f "$STATE_DIR/pids" ]] && cat "$STATE_DIR/pids"; true; }

# A pid is ours only while it is alive AND its command line names our Ray temp
# dir: a recycled pid belonging to something else is never signalled.
is_ours() {
    local pid="$1" tmp
    tmp="$(cat "$STATE_DIR/ray_tmp" 2>/dev/null)" || return 1
    [[ -n "$tmp" && -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$tmp"
}

any_running() {
    local role pid
    while read -r role pid; do
        is_ours "$pid" && return 0
    done < <(recorded_pids)
    return 1
}

load_env() {
    # shellcheck disable=SC1091
    source "$STATE_DIR/cluster.env"
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

start_node() { # role log-name ray-start-args...
    local role="$1" log="$2"
    shift 2
    # setsid: the node gets its own process group, which `down` signals as one.
    setsid ray start --block --disable-usage-stats \
        --object-store-memory=$((OBJECT_STORE_MB * 1024 * 1024)) \
        --min-worker-port=0 --max-worker-port=0 "$@" \
        >"$STATE_DIR/logs/$log.log" 2>&1 </dev/null &
    echo "$role $!" >>"$STATE_DIR/pids"
}

wait_for_nodes() { # expected-alive-nodes [head-pid: give up as soon as it exits]
    # `timeout`: ray.init can block in its own GCS retries past our deadline.
    timeout -k 5 $((${TIMEOUT_S%.*} + 30)) \
        "$PYTHON" - "$RAY_ADDRESS" "$1" "$TIMEOUT_S" "${2:-0}" <<'EOF'
import os, socket, sys, time
import ray
address, expected, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
head_pid = int(sys.argv[4])
deadline = time.monotonic() + timeout
def head_alive():
    try:
        os.kill(head_pid, 0)
        return True
    except ProcessLookupError:
        return False
host, port = address.rsplit(":", 1)
while True:  # ray.init blocks long in its own retries: first wait for the GCS port
    if head_pid and not head_alive():
        sys.exit(f"the head's `ray start` exited before its GCS at {address} answered")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"head at {address} did not come up within {timeout:.0f} s")
        time.sleep(0.5)
while True:
    if head_pid and not head_alive():
        sys.exit(f"the head's `ray start` exited before its GCS at {address} answered")
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        break
    except Exception as error:  # GCS not up yet
        if time.monotonic() > deadline:
            sys.exit(f"head at {address} did not come up within {timeout:.0f} s: {error}")
        time.sleep(1)
while True:
    alive = sum(node["Alive"] for node in ray.nodes())
    if alive >= expected:
        break
    if time.monotonic() > deadline:
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
    [[ -f "$STATE_DIR/pids" ]] && cmd_down_quiet
    rm -rf "$STATE_DIR"
    mkdir -p "$STATE_DIR/logs"
    # Ray's Unix socket paths must stay under ~107 characters: keep temp dirs short.
    local ray_tmp
    ray_tmp="$(mktemp -d "${TMPDIR:-/tmp}/cmcl-lc.XXXXXX")"
    echo "$ray_tmp" >"$STATE_DIR/ray_tmp"

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

    local i base
    for ((i = 0; i <= WORKERS; i++)); do
        base=$((HEAD_PORTS + NODE_PORTS * i))
        local node_args=(
            --temp-dir="$ray_tmp/n$i"
            --node-manager-port="${ports[base]}"
            --object-manager-port="${ports[base + 1]}"
            --dashboard-agent-listen-port="${ports[base + 2]}"
            --dashboard-agent-grpc-port="${ports[base + 3]}"
            --runtime-env-agent-port="${ports[base + 4]}"
            --metrics-export-port="${ports[base + 5]}"
        )
        if ((i == 0)); then
            # Ray gives a new node's raylet a fixed 30 s to register; a cold start
            # (first run of a fresh environment, a loaded machine) can take longer
            # and `ray start` then exits. One retry, on the same ports, covers that.
            local attempt head_pid
            for attempt in 1 2; do
                start_node head head --head --node-ip-address=127.0.0.1 --port="$gcs_port" \
                    --num-cpus="$HEAD_CPUS" --dashboard-host=127.0.0.1 \
                    --dashboard-port="$dashboard_port" --ray-client-server-port="$client_port" \
                    "${node_args[@]}"
                head_pid="$(awk '$1 == "head" {pid = $2} END {print pid}' "$STATE_DIR/pids")"
                # Workers can only join once the GCS answers.
                wait_for_nodes 1 "$head_pid" && break
                if ((attempt == 2)); then
                    cmd_down_quiet
                    die "head failed twice; see $STATE_DIR/logs/head.log"
                fi
                echo "local.sh: the head did not start (log: $STATE_DIR/logs/head.log.1); retrying once" >&2
                # Its GCS and raylet may outlive the `ray start` that exited: end the
                # whole process group and anything else running from its temp dir.
                stop_group "$head_pid"
                kill -KILL -- "-$head_pid" 2>/dev/null || true
                pkill -KILL -f -- "$ray_tmp/n0" 2>/dev/null || true
                sleep 1
                rm -rf "$ray_tmp/n0"
                mv "$STATE_DIR/logs/head.log" "$STATE_DIR/logs/head.log.1"
                sed -i '/^head /d' "$STATE_DIR/pids"
            done
        else
            start_node worker "worker$i" --address="$RAY_ADDRESS" \
                --num-cpus="$CPUS_PER_WORKER" "${node_args[@]}"
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
Stop it with: cluster/local.sh down
EOF
}

stop_group() { # pid: SIGTERM the `ray start --block` leader, which stops its node
    local pid="$1" waited=0
    is_ours "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    while pgrep -g "$pid" >/dev/null && ((waited < 150)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    # Anything left in the group after 15 s (a hung shutdown) is killed outright.
    if pgrep -g "$pid" >/dev/null; then
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
}

cmd_down_quiet() {
    local role pid ray_tmp
    # Workers first, head last, so no raylet outlives the GCS it reports to.
    while read -r role pid; do
        stop_group "$pid"
    done < <(recorded_pids | tac)
    ray_tmp="$(cat "$STATE_DIR/ray_tmp" 2>/dev/null || true)"
    if [[ -n "$ray_tmp" ]]; then
        # Stragglers that left their group still carry our unique temp dir.
        local straggler
        for straggler in $(pgrep -f -- "$ray_tmp" || true); do
            [[ "$straggler" != "$$" ]] && kill -KILL "$straggler" 2>/dev/null || true
        done
        ((KEEP_LOGS)) || rm -rf "$ray_tmp"
    fi
    rm -f "$STATE_DIR/pids"
}

cmd_down() {
    if [[ ! -f "$STATE_DIR/pids" ]]; then
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
    "$PYTHON" - "$RAY_ADDRESS" <<'EOF'
import sys
import ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(f"{'node id':<14} {'alive':<6} {'head':<5} resources")
for node in sorted(ray.nodes(), key=lambda n: "node:__internal_head__" not in n["Resources"]):
    resources = {k: v for k, v in node["Resources"].items() if not k.startswith("node:")}
    shown = ", ".join(
        f"{k}={v:g}" if k in ("CPU", "GPU") else f"{k}={v / 2**30:.2f}GiB"
        for k, v in sorted(resources.items())
    )
    head = "node:__internal_head__" in node["Resources"]
    print(f"{node['NodeID'][:12]:<14} {str(node['Alive']):<6} {str(head):<5} {shown}")
total = ray.cluster_resources()
print(f"total: CPU={total.get('CPU', 0):g} GPU={total.get('GPU', 0):g}")
EOF
    echo "processes (pid of each node's 'ray start --block' leader = its process group):"
    local role pid
    while read -r role pid; do
        echo "  $role $pid $(pgrep -g "$pid" | wc -l) process(es)"
    done < <(recorded_pids)
}

(($#)) || usage 2
command="$1"
shift
parse_options "$@"
case "$command" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
-h | --help | help) usage 0 ;;
*) die "unknown command '$command' (valid: up, down, status)" ;;
esac
