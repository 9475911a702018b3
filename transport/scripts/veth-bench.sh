#!/bin/sh
# QUIC against TLS over TCP across two network namespaces joined by a veth pair at a pod MTU:
# `ferry bench --peer` (raw throughput each way, no disk) with each transport, alternating,
# printing wall throughput and CPU seconds per GiB of both processes. Needs root.
#
#   transport/scripts/veth-bench.sh [FERRY] [SIZE_MIB] [REPS] [MTU]
#   e.g. transport/scripts/veth-bench.sh target/release/ferry 512 5 1500
# TRANSPORTS="quic" runs one transport only; NSTAT=1 prints each namespace's UDP receive-buffer
# drops and TCP retransmits after each run. CPU is user + system time of the `ferry bench`
# process (client) and of `ferry serve` over the run (server), per GiB moved (both ways).
set -eu
FERRY=$(readlink -f "${1:-target/release/ferry}")
SIZE=${2:-512}
REPS=${3:-3}
MTU=${4:-1500}
A=ferry-bench-a B=ferry-bench-b
W=$(mktemp -d)
cleanup() {
    [ -n "${SRV:-}" ] && kill "$SRV" 2>/dev/null || true
    ip netns del $A 2>/dev/null || true
    ip netns del $B 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT INT TERM
ip netns del $A 2>/dev/null || true
ip netns del $B 2>/dev/null || true
ip netns add $A
ip netns add $B
ip link add fb-va netns $A type veth peer name fb-vb netns $B
ip -n $A addr add 10.77.0.1/24 dev fb-va
ip -n $B addr add 10.77.0.2/24 dev fb-vb
ip -n $A link set fb-va mtu "$MTU" up
ip -n $B link set fb-vb mtu "$MTU" up
ip -n $A link set lo up
ip -n $B link set lo up
"$FERRY" init --out "$W/creds" --name 10.77.0.2 >/dev/null
mkdir -p "$W/m"
ip netns exec $B "$FERRY" serve --listen 10.77.0.2:7873 --identity "$W/creds/destination" \
    --module "m=$W/m" >"$W/serve.out" 2>"$W/serve.err" &
SRV=$!
sleep 1
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
echo "mtu $MTU, $SIZE MiB each way, $REPS reps; ferry $FERRY"
echo "transport         up GB/s  down GB/s  client CPU s/GiB  server CPU s/GiB"
i=0
while [ $i -lt "$REPS" ]; do
    for t in ${TRANSPORTS:-quic tcp}; do
        s0=$(ticks $SRV)
        out=$(ip netns exec $A /usr/bin/time -f '%U %S' "$FERRY" bench --peer ferry://10.77.0.2:7873/m \
            --identity "$W/creds/source" --transport $t --size-mib "$SIZE" --sync-mib 0 --json 2>"$W/time")
        s1=$(ticks $SRV)
        if [ -n "${NSTAT:-}" ]; then
            for n in $A $B; do ip netns exec $n nstat -a 2>/dev/null | grep -E "UdpRcvbufErrors|UdpInErrors|UdpSndbufErrors|TcpRetransSegs" | tr -s ' ' | tr '\n' ' '; ip netns exec $n nstat -r >/dev/null 2>&1; echo " ($n)"; done
        fi
        cpu=$(tail -n 1 "$W/time")
        echo "$out" | python3 -c '
import json, sys
r = json.load(sys.stdin)
t, size, cpu, srv, hz = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), int(sys.argv[4]), int(sys.argv[5])
gib = 2 * size / 1024  # both directions
up, down = r["upload_gbps"], r["download_gbps"]
print("%-16s %8.3f %10.3f %17.3f %17.3f" % (t, up, down, (float(cpu[0]) + float(cpu[1])) / gib, srv / hz / gib))
' "$t" "$SIZE" "$cpu" $((s1 - s0)) "$HZ"
    done
    i=$((i + 1))
done
