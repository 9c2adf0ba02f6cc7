#!/usr/bin/env bash
# The LEDBAT testbed (issue #11): does uTP fill an idle bottleneck, keep the queue at its
# target delay, and get out of TCP's way?
#
#   sender ns ──veth── router ns ──veth── receiver ns
#                                 └ tc tbf: 20 Mbit/s, queue of ~250 ms (the bottleneck)
#
# Traffic is routed through the router: with two namespaces only, the bottleneck queue
# would be charged to the sending TCP socket (TCP small queues) and Linux TCP would never
# fill it, so it would be no real competitor. TCP runs CUBIC, set per socket
# (TCP_CONGESTION) because the host default may be BBR and a namespace cannot change the
# default; `ss -ti` checks it while TCP runs.
#
# Scenarios: utp-alone, tcp-alone, both (started together), utp-first (TCP joins later),
# tcp-first (uTP is the latecomer). Ping through the queue, every 200 ms, gives the queuing
# delay (minus the base RTT measured on the idle path just before). The measuring is done
# by hidden subcommands of the `utp` binary (utp-cli/src/testbed/): `testbed-sink`,
# `testbed-send` and `testbed-report`, which prints one table per controller:
# utilisation, mean/p95 queuing delay, each flow's rate, uTP's share, and the verdict
# against the targets (uTP alone: >= 97 % utilisation, queue at 90-105 % of target;
# share <= 5 % when uTP starts first, <= 10 % as the latecomer). A missed target is a
# finding, never a failure; with TESTBED_CHECK=1 the script fails only when the testbed
# itself breaks (a flow that moved nothing, no ping reply, TCP not running CUBIC).
#
# Run as root:  bash utp-cli/testbed/ledbat-testbed.sh
# Settings (environment):
#   TESTBED_DURATION     seconds each scenario measures (default 60)
#   TESTBED_LEAD         seconds the first flow runs alone in utp-first/tcp-first (20)
#   TESTBED_SETTLE       seconds left out after the last flow starts (5)
#   TESTBED_CONTROLLERS  uTP controllers, one table each ("ledbat ledbat++ newreno")
#   TESTBED_SCENARIOS    ("utp-alone tcp-alone both utp-first tcp-first")
#   TESTBED_RATE_MBIT    bottleneck rate (20);  TESTBED_QUEUE_MS  its queue (250)
#   TESTBED_OUT          where the raw data and tables go (default a new /tmp directory)
#   TESTBED_CHECK=1      exit non-zero if the testbed broke (for CI)
#   TESTBED_UTP_SENDER   what sends the uTP flow: "tool" (default: `utp testbed-send`, which
#                        also logs cwnd and RTT each second) or "netcat" (the user's command,
#                        `utp --controller CTL --dont-fragment RCV PORT < /dev/zero`, stopped
#                        by `timeout`); the sink measures both alike
#   UTP_BIN              the `utp` binary; default: cargo build --release -p utp-cli
#   UTP_PROFILE          cargo profile when building it (release)
set -euo pipefail

die() { echo "ledbat-testbed: $*" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

[ "$(id -u)" = 0 ] || die "run as root (it creates network namespaces)"

DURATION=${TESTBED_DURATION:-60}
LEAD=${TESTBED_LEAD:-20}
SETTLE=${TESTBED_SETTLE:-5}
CONTROLLERS=${TESTBED_CONTROLLERS:-"ledbat ledbat++ newreno"}
SCENARIOS=${TESTBED_SCENARIOS:-"utp-alone tcp-alone both utp-first tcp-first"}
RATE_MBIT=${TESTBED_RATE_MBIT:-20}
QUEUE_MS=${TESTBED_QUEUE_MS:-250}
CHECK=${TESTBED_CHECK:-0}
UTP_SENDER=${TESTBED_UTP_SENDER:-tool}
case $UTP_SENDER in tool | netcat) ;; *) die "TESTBED_UTP_SENDER must be tool or netcat" ;; esac
PROFILE=${UTP_PROFILE:-release}
for v in DURATION LEAD SETTLE RATE_MBIT QUEUE_MS; do
    [[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 ]] || die "TESTBED_$v must be a positive integer"
done
[ "$SETTLE" -lt "$DURATION" ] || die "TESTBED_SETTLE must be shorter than TESTBED_DURATION"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${TESTBED_OUT:-$(mktemp -d /tmp/ledbat-testbed.XXXXXX)}
mkdir -p "$OUT"

# --- tools ------------------------------------------------------------------------------
missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v tc >/dev/null || missing+=(iproute2)
command -v ss >/dev/null || missing+=(iproute2)
command -v ping >/dev/null || missing+=(iputils-ping)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ -n "${UTP_BIN:-}" ]; then
    UTP=$UTP_BIN
else
    log "building utp ($PROFILE)"
    (cd "$ROOT" && cargo build --quiet --locked --profile "$PROFILE" -p utp-cli)
    target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
    case $PROFILE in dev) sub=debug ;; *) sub=$PROFILE ;; esac
    UTP=$target_dir/$sub/utp
fi
[ -x "$UTP" ] || die "no utp binary at $UTP"
UTP=$(realpath "$UTP")

# --- the network ------------------------------------------------------------------------
# Names unique to this run, so concurrent runs and leftovers never collide. Addresses are
# from 198.18.0.0/15 (RFC 2544, for benchmarking) and exist only inside these namespaces.
ID=$$
NS_S=utpbed-$ID-snd
NS_R=utpbed-$ID-rtr
NS_D=utpbed-$ID-rcv
IF_S=tb${ID}s    # sender's end              (in NS_S)
IF_RS=tb${ID}rs  # router, toward the sender (in NS_R)
IF_RD=tb${ID}rd  # router, toward the receiver: the bottleneck (in NS_R)
IF_D=tb${ID}d    # receiver's end            (in NS_D)
SND_IP=198.18.1.1
RCV_IP=198.18.2.2
PORT=5001

PIDS=() # background processes of the scenario running now (none between scenarios)
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for ns in "$NS_S" "$NS_R" "$NS_D"; do ip netns del "$ns" 2>/dev/null || true; done
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Foreground only: a background job must be `ip netns exec ... &` itself, so that $! is the
# process (ip execs the command) and not a subshell that would outlive a kill.
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
now_ms() { local t=${EPOCHREALTIME//[.,]/}; echo $((t / 1000)); }

log "namespaces $NS_S -> $NS_R -> $NS_D, results in $OUT"
for ns in "$NS_S" "$NS_R" "$NS_D"; do
    ip netns add "$ns"
    in_ns "$ns" ip link set lo up
done
ip link add "$IF_S" netns "$NS_S" type veth peer name "$IF_RS" netns "$NS_R"
ip link add "$IF_RD" netns "$NS_R" type veth peer name "$IF_D" netns "$NS_D"
in_ns "$NS_S" ip addr add "$SND_IP/24" dev "$IF_S"
in_ns "$NS_R" ip addr add 198.18.1.2/24 dev "$IF_RS"
in_ns "$NS_R" ip addr add 198.18.2.1/24 dev "$IF_RD"
in_ns "$NS_D" ip addr add "$RCV_IP/24" dev "$IF_D"
in_ns "$NS_S" ip link set "$IF_S" up
in_ns "$NS_R" ip link set "$IF_RS" up
in_ns "$NS_R" ip link set "$IF_RD" up
in_ns "$NS_D" ip link set "$IF_D" up
in_ns "$NS_S" ip route add default via 198.18.1.2
in_ns "$NS_D" ip route add default via 198.18.2.1
in_ns "$NS_R" sysctl -qw net.ipv4.ip_forward=1
# The bottleneck: token bucket at the rate, a 4 KB bucket, and a queue of QUEUE_MS at the
# rate (tbf's `latency` sets limit = rate x latency + burst: ~629 KB at 20 Mbit/s).
in_ns "$NS_R" tc qdisc add dev "$IF_RD" root tbf rate "${RATE_MBIT}mbit" burst 32kbit \
    latency "${QUEUE_MS}ms"
in_ns "$NS_R" tc qdisc show dev "$IF_RD" >&2
in_ns "$NS_S" ping -n -q -c 3 -i 0.2 -W 1 "$RCV_IP" >/dev/null \
    || die "no route from sender to receiver through the router"

# --- one scenario -----------------------------------------------------------------------
BROKEN=()

# tc counters of the bottleneck every 500 ms: "unix_ms bytes dropped".
sample_tc() {
    while :; do
        local line
        line=$(in_ns "$NS_R" tc -s qdisc show dev "$IF_RD" |
            awk '/Sent/ { gsub(",", "", $7); print $2, $7; exit }')
        echo "$(now_ms) $line"
        sleep 0.5
    done
}

# sender PROTO DURATION_S CONTROLLER LOGFILE: start one flow in the sender namespace.
sender() {
    local proto=$1 secs=$2 ctl=$3 logfile=$4
    if [ "$proto" = utp ] && [ "$UTP_SENDER" = netcat ]; then
        # Netcat mode as a user runs it; `timeout` ends it at the deadline (status 124).
        echo "{\"event\":\"start\",\"proto\":\"utp\",\"sender\":\"netcat\",\"controller\":\"$ctl\",\"unix_ms\":$(now_ms)}" \
            >"$logfile"
        ip netns exec "$NS_S" timeout "${secs}s" "$UTP" --controller "$ctl" --dont-fragment \
            "$RCV_IP" "$PORT" </dev/zero >/dev/null 2>"${logfile%.jsonl}.err" &
    else
        ip netns exec "$NS_S" "$UTP" testbed-send --to "$RCV_IP:$PORT" "--$proto" \
            --controller "$ctl" --tcp-congestion cubic --duration "${secs}s" \
            >"$logfile" 2>"${logfile%.jsonl}.err" &
    fi
    SENDER_PIDS+=($!)
    PIDS+=($!)
}

# run_scenario NAME CONTROLLER DIR
run_scenario() {
    local name=$1 ctl=$2 dir=$3
    local utp=0 tcp=0 first second="" total=$DURATION
    case $name in
        utp-alone) utp=1 first=utp ;;
        tcp-alone) tcp=1 first=tcp ;;
        both) utp=1 tcp=1 first="utp tcp" ;;
        utp-first) utp=1 tcp=1 first=utp second=tcp total=$((LEAD + DURATION)) ;;
        tcp-first) utp=1 tcp=1 first=tcp second=utp total=$((LEAD + DURATION)) ;;
        *) die "unknown scenario $name" ;;
    esac
    mkdir -p "$dir"
    rm -f "$dir"/*
    log "$ctl / $name (${total} s)"
    # The idle path's RTT, just before the load.
    in_ns "$NS_S" ping -D -n -c 10 -i 0.1 -W 1 "$RCV_IP" >"$dir/base.txt" || true

    ip netns exec "$NS_D" "$UTP" testbed-sink --listen "$RCV_IP:$PORT" --duration "$((total + 30))s" \
        >"$dir/sink.jsonl" 2>"$dir/sink.err" &
    local sink=$!
    PIDS+=("$sink")
    for _ in $(seq 50); do
        grep -q '"listening"' "$dir/sink.jsonl" 2>/dev/null && break
        sleep 0.1
    done
    grep -q '"listening"' "$dir/sink.jsonl" || die "the sink did not start: $(cat "$dir/sink.err")"

    sample_tc >"$dir/tc.txt" &
    local sampler=$!
    PIDS+=("$sampler")
    ip netns exec "$NS_S" ping -D -n -i 0.2 -w "$((total + 1))" "$RCV_IP" >"$dir/ping.txt" 2>&1 &
    local pinger=$!
    PIDS+=("$pinger")

    SENDER_PIDS=()
    local start_ms second_ms=0
    start_ms=$(now_ms)
    for p in $first; do sender "$p" "$total" "$ctl" "$dir/$p.jsonl"; done
    if [ -n "$second" ]; then
        sleep "$LEAD"
        second_ms=$(now_ms)
        sender "$second" "$DURATION" "$ctl" "$dir/$second.jsonl"
    fi
    if [ "$tcp" = 1 ]; then
        # Which congestion control the kernel runs for the flow, seen from outside.
        sleep 2
        in_ns "$NS_S" ss -tin dst "$RCV_IP" >"$dir/ss.txt" 2>&1 || true
        if ! grep -qw cubic "$dir/ss.txt"; then
            BROKEN+=("$ctl/$name: ss -ti shows no cubic flow")
            log "ss -ti shows no cubic flow: $(tr '\n' ' ' <"$dir/ss.txt")"
        fi
    fi
    local end_ms=$((start_ms + total * 1000))
    local pid
    for pid in "${SENDER_PIDS[@]}"; do
        local rc=0
        wait "$pid" || rc=$?
        # 124: `timeout` stopped a netcat sender at its deadline, as it should.
        if [ "$rc" != 0 ] && { [ "$UTP_SENDER" != netcat ] || [ "$rc" != 124 ]; }; then
            BROKEN+=("$ctl/$name: a sender failed ($rc): $(cat "$dir"/*.err | tr '\n' ' ')")
        fi
    done
    # ping stops by itself (-w) a second after the flows; the sink and sampler are stopped.
    wait "$pinger" 2>/dev/null || true
    kill "$sink" "$sampler" 2>/dev/null || true
    wait "$sink" "$sampler" 2>/dev/null || true
    PIDS=()
    cat >"$dir/meta" <<EOF
scenario=$name
controller=$ctl
utp_sender=$UTP_SENDER
utp=$utp
tcp=$tcp
start_ms=$start_ms
second_ms=$second_ms
end_ms=$end_ms
settle_ms=$((SETTLE * 1000))
rate_bit=$((RATE_MBIT * 1000000))
EOF
    # Let the queue drain before the next scenario.
    sleep 1
}

# --- the runs ---------------------------------------------------------------------------
t0=$SECONDS
tcp_alone_done=0
for ctl in $CONTROLLERS; do
    for s in $SCENARIOS; do
        if [ "$s" = tcp-alone ]; then
            # uTP plays no part: run it once and show it in every table.
            [ $tcp_alone_done = 1 ] && continue
            run_scenario tcp-alone "$ctl" "$OUT/tcp-alone"
            tcp_alone_done=1
        else
            run_scenario "$s" "$ctl" "$OUT/$ctl/$s"
        fi
    done
done

echo
echo "LEDBAT testbed: ${RATE_MBIT} Mbit/s tbf bottleneck, ${QUEUE_MS} ms queue, TCP cubic," \
    "uTP sent by $([ "$UTP_SENDER" = netcat ] && echo 'netcat mode' || echo 'utp testbed-send');" \
    "${DURATION} s per scenario (${LEAD} s lead in utp-first/tcp-first, first ${SETTLE} s" \
    "after the last start left out); $((SECONDS - t0)) s in all; data in $OUT"
rm -f "$OUT/results.jsonl"
for ctl in $CONTROLLERS; do
    dirs=()
    for s in $SCENARIOS; do
        if [ "$s" = tcp-alone ]; then dirs+=("$OUT/tcp-alone"); else dirs+=("$OUT/$ctl/$s"); fi
    done
    check=()
    [ "$CHECK" = 1 ] && check=(--check)
    "$UTP" testbed-report --controller "$ctl" --json "$OUT/results.jsonl" "${check[@]}" \
        "${dirs[@]}" 2>"$OUT/report-$ctl.err" || true
done | tee "$OUT/tables.txt"
# The pipe ran the loop in a subshell: collect its failures from the files it left.
for ctl in $CONTROLLERS; do
    [ -s "$OUT/report-$ctl.err" ] && BROKEN+=("$(cat "$OUT/report-$ctl.err")")
done

if [ ${#BROKEN[@]} -gt 0 ]; then
    printf '\nTESTBED BROKEN:\n' >&2
    printf '  %s\n' "${BROKEN[@]}" >&2
    [ "$CHECK" = 1 ] && exit 1
fi
exit 0
