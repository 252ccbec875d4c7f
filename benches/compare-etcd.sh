#!/usr/bin/env bash
# Trireme beside etcd on this machine, in one run, with the same load tool
# (`trireme bench`, which speaks etcd's v3 JSON gateway).
#
#   benches/compare-etcd.sh            # full run, a few minutes
#   SCALE_PCT=10 benches/compare-etcd.sh   # smoke run: 10 % of the request counts
#
# What it does:
#  - installs etcd (Debian's etcd-server, etcd-client), jq, make and gcc if missing; builds
#    target/release/trireme;
#  - starts a three-member etcd cluster on loopback: mutual TLS on the peer ports (the
#    peer certificates of `trireme certs init`), plain HTTP client listeners, defaults
#    otherwise (fsync on); and a three-replica Trireme cluster (`trireme dev-cluster
#    --insecure-http`: mutual TLS peers, plain HTTP API, defaults otherwise);
#  - loads 100,000 keys (256-byte values) into each and measures each data dir (du -sb);
#  - runs each workload against etcd and Trireme, alternating which goes first:
#    256-byte puts to the leader with 1, 16, 64, 256 clients; linearizable ranges
#    spread over all members with 16 and 64 clients. The one-client puts run in
#    ROUNDS_1 rounds (default 5), alternating, and each of their figures is the median
#    over the rounds;
#  - reads each member's peak RSS (VmHWM) at the end;
#  - prints one table and writes target/compare-etcd.json.
# It stops only the processes it started (by PID) and removes its temp dir.
#
# Ports (override if taken): etcd member i listens for clients on ETCD_BASE+i and for
# peers on ETCD_BASE+10+i; Trireme uses dev-cluster's layout from TR_BASE (HTTP API on
# TR_BASE+200+i-1).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ETCD_BASE=${ETCD_BASE:-23790}
TR_BASE=${TR_BASE:-17400}
SCALE_PCT=${SCALE_PCT:-100}
CAP_S=${CAP_S:-60} # no workload runs longer than this
ROUNDS_1=${ROUNDS_1:-5} # rounds of the one-client workload
OUT=${OUT:-$ROOT/target/compare-etcd.json}

log() { printf '== %s\n' "$*" >&2; }

# ---- tools ----
missing=()
command -v etcd >/dev/null || missing+=(etcd-server)
command -v etcdctl >/dev/null || missing+=(etcd-client)
command -v jq >/dev/null || missing+=(jq)
command -v curl >/dev/null || missing+=(curl)
command -v make >/dev/null || missing+=(make) # jemalloc's build
command -v cc >/dev/null || missing+=(gcc)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    SUDO=()
    [[ $(id -u) == 0 ]] || SUDO=(sudo)
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
log "building target/release/trireme"
(cd "$ROOT" && cargo build --release -q -p trireme)
B=$ROOT/target/release/trireme

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $((ETCD_BASE + 1)) $((ETCD_BASE + 2)) $((ETCD_BASE + 3)) $((ETCD_BASE + 11)) $((ETCD_BASE + 12)) $((ETCD_BASE + 13)) \
    "$TR_BASE" $((TR_BASE + 1)) $((TR_BASE + 2)) $((TR_BASE + 100)) $((TR_BASE + 101)) $((TR_BASE + 102)) \
    $((TR_BASE + 200)) $((TR_BASE + 201)) $((TR_BASE + 202)); do
    port_free "$p" || {
        echo "port $p is in use; set ETCD_BASE / TR_BASE" >&2
        exit 2
    }
done

# ---- processes: started here, stopped here, by PID ----
WORK=$(mktemp -d "${TMPDIR:-/tmp}/compare-etcd.XXXXXX")
PIDS=()        # every process this script started (etcd members, dev-cluster)
TR_PIDS=()     # Trireme replica processes (children of dev-cluster)
ETCD_PIDS=()

# A PID is ours only while its command line still names our work dir (no PID reuse).
ours() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -qF "$WORK"; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local pid alive
    for pid in "${PIDS[@]}" "${TR_PIDS[@]}"; do
        ours "$pid" && kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in $(seq 1 100); do
        alive=0
        for pid in "${PIDS[@]}" "${TR_PIDS[@]}"; do ours "$pid" && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${PIDS[@]}" "${TR_PIDS[@]}"; do
        ours "$pid" && kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if ((rc != 0)) && [[ -d $WORK ]]; then
        for f in "$WORK"/*.log "$WORK"/trireme/replica-*.log; do
            [[ -f $f ]] && { echo "--- tail of $f" >&2; tail -5 "$f" >&2; }
        done
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- etcd ----
log "certificates"
"$B" certs init --out "$WORK/pki" --replica etcd-1=127.0.0.1 --replica etcd-2=127.0.0.1 \
    --replica etcd-3=127.0.0.1 >/dev/null
PKI=$WORK/pki
ETCD_EPS=()
initial=()
for i in 1 2 3; do
    initial+=("etcd-$i=https://127.0.0.1:$((ETCD_BASE + 10 + i))")
    ETCD_EPS+=("http://127.0.0.1:$((ETCD_BASE + i))")
done
log "starting etcd $(etcd --version | head -1 | awk '{print $3}') (3 members)"
for i in 1 2 3; do
    etcd --name "etcd-$i" --data-dir "$WORK/etcd/etcd-$i" \
        --listen-client-urls "${ETCD_EPS[i - 1]}" --advertise-client-urls "${ETCD_EPS[i - 1]}" \
        --listen-peer-urls "https://127.0.0.1:$((ETCD_BASE + 10 + i))" \
        --initial-advertise-peer-urls "https://127.0.0.1:$((ETCD_BASE + 10 + i))" \
        --initial-cluster "$(
            IFS=,
            echo "${initial[*]}"
        )" \
        --initial-cluster-state new --initial-cluster-token compare-etcd \
        --peer-client-cert-auth --peer-trusted-ca-file "$PKI/ca.crt" \
        --peer-cert-file "$PKI/etcd-$i-peer.crt" --peer-key-file "$PKI/etcd-$i-peer.key" \
        --logger zap --log-outputs stderr --log-level warn \
        >"$WORK/etcd-$i.log" 2>&1 &
    PIDS+=($!)
    ETCD_PIDS+=($!)
done

# ---- Trireme ----
log "starting Trireme (3 replicas, dev-cluster)"
"$B" dev-cluster --dir "$WORK/trireme" --base-port "$TR_BASE" --insecure-http --no-controller \
    >"$WORK/dev-cluster.log" 2>&1 &
DC_PID=$!
PIDS+=("$DC_PID")
TR_EPS=()
for i in 1 2 3; do TR_EPS+=("http://127.0.0.1:$((TR_BASE + 200 + i - 1))"); done

# Both clusters: every endpoint answers status with the same, non-zero leader.
wait_leader() {
    local deadline=$((SECONDS + 60)) ep l leaders
    while ((SECONDS < deadline)); do
        leaders=()
        for ep in "$@"; do
            l=$(curl -sf -m 2 -X POST "$ep/v3/maintenance/status" -d '{}' | jq -r '.leader // "0"' 2>/dev/null) || l=0
            leaders+=("${l:-0}")
        done
        if [[ ${leaders[0]} != 0 ]] && [[ $(printf '%s\n' "${leaders[@]}" | sort -u | wc -l) == 1 ]]; then
            return 0
        fi
        sleep 0.3
    done
    echo "no leader on $* after 60 s" >&2
    return 1
}
wait_leader "${ETCD_EPS[@]}"
wait_leader "${TR_EPS[@]}"
# The replica processes: dev-cluster's children.
for _ in $(seq 1 50); do
    mapfile -t TR_PIDS < <(cat /proc/"$DC_PID"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+$' || true)
    ((${#TR_PIDS[@]} == 3)) && break
    sleep 0.1
done
((${#TR_PIDS[@]} == 3)) || {
    echo "expected 3 replica processes under dev-cluster ($DC_PID), found ${#TR_PIDS[@]}" >&2
    exit 1
}

join() {
    local IFS=,
    echo "$*"
}
EP_etcd=$(join "${ETCD_EPS[@]}")
EP_trireme=$(join "${TR_EPS[@]}")
scaled() { echo $(($1 * SCALE_PCT / 100 > 0 ? $1 * SCALE_PCT / 100 : 1)); }

mkdir -p "$WORK/res"
COMMON=(--key-size 8 --val-size 256 --key-space 100000 --json)
# bench SYSTEM NAME OP CLIENTS ARGS...: one run, its JSON report in res/NAME-SYSTEM.json
bench() {
    local sys=$1 name=$2 op=$3 clients=$4
    shift 4
    local ep_var=EP_$sys
    "$B" bench "$op" --endpoints "${!ep_var}" --clients "$clients" "${COMMON[@]}" "$@" \
        >"$WORK/res/$name-$sys.json"
    jq -r --arg s "$sys" --arg n "$name" \
        '"   \($n) \($s): \(.ok) ok, \(.failed) failed, \(.throughput|floor)/s, p50 \(.latency_ms.p50) ms, p99 \(.latency_ms.p99) ms"' \
        "$WORK/res/$name-$sys.json" >&2
}

# ---- 1. load 100,000 keys, then data dir sizes ----
KEYS=$(scaled 100000)
log "loading $KEYS keys into each (64 clients, to the leader)"
bench etcd load put 64 --total "$KEYS" --sequential-keys --target-leader
bench trireme load put 64 --total "$KEYS" --sequential-keys --target-leader
sleep 2 # followers apply the tail
DU_etcd=() DU_trireme=()
for i in 1 2 3; do
    DU_etcd+=("$(du -sb "$WORK/etcd/etcd-$i" | cut -f1)")
    DU_trireme+=("$(du -sb "$WORK/trireme/data/replica-$i" | cut -f1)")
done

# ---- 2. workloads, alternating which system goes first ----
# name op clients total rounds extra-args. A workload of several rounds alternates the
# systems round by round; each of its figures is the median over its rounds (one
# client's latency moves most from one run to the next, with either system).
WORKLOADS=(
    "put-1 put 1 3000 $ROUNDS_1 --target-leader"
    "put-16 put 16 20000 1 --target-leader"
    "put-64 put 64 40000 1 --target-leader"
    "put-256 put 256 60000 1 --target-leader"
    "range-lin-16 range 16 60000 1 --spread --linearizable"
    "range-lin-64 range 64 80000 1 --spread --linearizable"
)
# median REPORT...: one report whose throughput and latency percentiles are the medians
# of the reports' (the lower middle one for an even count), counts summed, and the
# rounds' own figures under "rounds".
median() {
    jq -s 'def med: sort | .[(length - 1) / 2 | floor];
        . as $r
        | $r[0]
        | .throughput = ($r | map(.throughput) | med)
        | .latency_ms = ($r[0].latency_ms | with_entries(.key as $k | .value = ($r | map(.latency_ms[$k]) | med)))
        | .requests = ($r | map(.requests) | add)
        | .ok = ($r | map(.ok) | add)
        | .failed = ($r | map(.failed) | add)
        | .errors = ($r | map(.errors // {} | to_entries) | add | group_by(.key)
                     | map({key: .[0].key, value: (map(.value) | add)}) | from_entries)
        | .rounds = ($r | map({throughput, p50: .latency_ms.p50, p99: .latency_ms.p99}))' "$@"
}
NAMES=()
k=0
for w in "${WORKLOADS[@]}"; do
    read -r name op clients total rounds extra <<<"$w"
    NAMES+=("$name")
    of_rounds=""
    ((rounds > 1)) && of_rounds=", $rounds rounds"
    log "$name ($op, $clients clients, $(scaled "$total") requests or ${CAP_S} s$of_rounds)"
    for ((r = 1; r <= rounds; r++)); do
        order=(etcd trireme)
        ((k % 2 == 1)) && order=(trireme etcd)
        for sys in "${order[@]}"; do
            # shellcheck disable=SC2086 # extra holds several flags
            bench "$sys" "$name-r$r" "$op" "$clients" --total "$(scaled "$total")" --duration "$CAP_S" $extra
            sleep 1
        done
        k=$((k + 1))
    done
    for sys in etcd trireme; do
        median "$WORK"/res/"$name"-r*-"$sys".json >"$WORK/res/$name-$sys.json"
        if ((rounds > 1)); then
            jq -r --arg s "$sys" --arg n "$name" \
                '"   \($n) \($s), median of \(.rounds | length) rounds: \(.throughput|floor)/s, p50 \(.latency_ms.p50) ms, p99 \(.latency_ms.p99) ms"' \
                "$WORK/res/$name-$sys.json" >&2
        fi
    done
done

# ---- 3. peak RSS ----
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
RSS_etcd=() RSS_trireme=()
for p in "${ETCD_PIDS[@]}"; do RSS_etcd+=("$(hwm_kb "$p")"); done
for p in "${TR_PIDS[@]}"; do RSS_trireme+=("$(hwm_kb "$p")"); done

# ---- the JSON ----
nums() { printf '%s\n' "$@" | jq -s 'map(tonumber)'; }
workloads_json=$(
    for n in load "${NAMES[@]}"; do
        jq -n --arg name "$n" --slurpfile e "$WORK/res/$n-etcd.json" --slurpfile t "$WORK/res/$n-trireme.json" \
            '{name: $name, etcd: $e[0], trireme: $t[0],
              ratio: {throughput: (if $e[0].throughput > 0 then $t[0].throughput / $e[0].throughput else null end),
                      p50: (if $e[0].latency_ms.p50 > 0 then $t[0].latency_ms.p50 / $e[0].latency_ms.p50 else null end),
                      p99: (if $e[0].latency_ms.p99 > 0 then $t[0].latency_ms.p99 / $e[0].latency_ms.p99 else null end)}}'
    done | jq -s .
)
mkdir -p "$(dirname "$OUT")"
jq -n \
    --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --arg cpu "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
    --argjson cores "$(nproc)" \
    --argjson mem_kb "$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)" \
    --arg kernel "$(uname -r)" \
    --arg etcd "$(etcd --version | head -1 | awk '{print $3}')" \
    --arg trireme "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    --argjson keys "$KEYS" \
    --argjson scale "$SCALE_PCT" \
    --argjson workloads "$workloads_json" \
    --argjson rss_e "$(nums "${RSS_etcd[@]}")" --argjson rss_t "$(nums "${RSS_trireme[@]}")" \
    --argjson du_e "$(nums "${DU_etcd[@]}")" --argjson du_t "$(nums "${DU_trireme[@]}")" \
    '{date: $date, machine: {cpu: $cpu, cores: $cores, mem_mib: ($mem_kb / 1024 | floor), kernel: $kernel},
      versions: {etcd: $etcd, trireme_commit: $trireme}, scale_pct: $scale,
      workloads: $workloads,
      peak_rss_kib: {etcd: $rss_e, trireme: $rss_t},
      data_dir_bytes: {keys: $keys, etcd: $du_e, trireme: $du_t}}' >"$OUT"

# ---- the table ----
{
    printf '\n%-13s | %11s %8s %8s | %11s %8s %8s | %6s %6s %6s\n' \
        workload "etcd req/s" "p50 ms" "p99 ms" "trir. req/s" "p50 ms" "p99 ms" "x tput" "x p50" "x p99"
    printf '%s\n' "--------------|-------------------------------|-------------------------------|---------------------"
    jq -r '.workloads[] | [.name, .etcd.throughput, .etcd.latency_ms.p50, .etcd.latency_ms.p99,
            .trireme.throughput, .trireme.latency_ms.p50, .trireme.latency_ms.p99,
            (.ratio.throughput // 0), (.ratio.p50 // 0), (.ratio.p99 // 0),
            (.etcd.failed + .trireme.failed)] | @tsv' "$OUT" |
        while IFS=$'\t' read -r n et e50 e99 tt t50 t99 rt r50 r99 failed; do
            printf '%-13s | %11.0f %8.2f %8.2f | %11.0f %8.2f %8.2f | %6.2f %6.2f %6.2f' \
                "$n" "$et" "$e50" "$e99" "$tt" "$t50" "$t99" "$rt" "$r50" "$r99"
            ((failed > 0)) && printf '  (%s failed requests)' "$failed"
            printf '\n'
        done
    jq -r '"peak RSS MiB  | etcd \(.peak_rss_kib.etcd | map(. / 1024 | floor) | join(" / "))"
           + " | trireme \(.peak_rss_kib.trireme | map(. / 1024 | floor) | join(" / "))"
           + " | x max \((.peak_rss_kib.trireme | max) / (.peak_rss_kib.etcd | max) * 100 | floor / 100)",
           "data dir MiB  | etcd \(.data_dir_bytes.etcd | map(. / 1048576 * 10 | floor / 10) | join(" / "))"
           + " | trireme \(.data_dir_bytes.trireme | map(. / 1048576 * 10 | floor / 10) | join(" / "))"
           + " | x max \((.data_dir_bytes.trireme | max) / (.data_dir_bytes.etcd | max) * 100 | floor / 100)"
           + "  (after \(.data_dir_bytes.keys) keys)"' "$OUT"
    printf '\nx = Trireme / etcd (throughput: higher is better; latency, RSS, size: lower is better).\n'
    printf 'machine: %s\n' "$(jq -r '"\(.machine.cores) cores, \(.machine.cpu), \(.machine.mem_mib) MiB, Linux \(.machine.kernel); etcd \(.versions.etcd), trireme \(.versions.trireme_commit); \(.date)"' "$OUT")"
    printf 'written: %s\n' "$OUT"
}
