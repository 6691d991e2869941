#!/usr/bin/env bash
# The demo (`make demo`, as root): build the lab, serve a page from `work`, forward port 80 of
# sys-net's LAN address to it with one qvm-portfwd command, fetch the page from a LAN client,
# show the forward's path, remove it, and watch the same request fail. Cleans up on any exit.
set -euo pipefail

PYTHON=${PYTHON:-python3}
DEMO_LAB=${DEMO_LAB:-default}
# The default lab's admin service listens where Qubes' tools look; other labs in their state dir.
if [[ $DEMO_LAB == default ]]; then
    export QUBESD_SOCKET=/run/qubes-portfwd/qubesd.sock
else
    export QUBESD_SOCKET=/run/qubes-lab/$DEMO_LAB/qubesd.sock
fi
# The default lab's layout: LAN 192.0.2.0/24, sys-net's LAN address .2, a LAN client at .10.
LAN_CLIENT=192.0.2.10
URL=http://192.0.2.2/
REACH_TIMEOUT=15   # seconds for a new forward to reach every hop
LISTEN_TIMEOUT=10  # seconds for the web server to listen
STOP_TIMEOUT=10    # seconds for a process to end after SIGTERM

WORK_DIR=$(mktemp -d /tmp/qubes-portfwd-demo.XXXXXX)
SERVER_PID_FILE=$WORK_DIR/server.pid
SERVER_JOB=""
LAB_STARTED=0
LAB_CLEANUP=()  # how to leave the lab as the demo found it (set before `up`)

if [[ -t 1 ]]; then BOLD=$'\e[1m' PLAIN=$'\e[0m'; else BOLD="" PLAIN=""; fi
say() { printf '\n%s==> %s%s\n' "$BOLD" "$*" "$PLAIN"; }
shown() { printf '$ %s\n' "$*"; }

qubes-lab() { "$PYTHON" -m qubes_lab --lab "$DEMO_LAB" "$@"; }
qvm-portfwd() { "$PYTHON" -m qubes_portfwd.cli.qvm_portfwd "$@"; }

# Ends one process by PID: SIGTERM, a bounded wait, then SIGKILL.
stop_pid() {
    local pid=$1 waited=0
    kill -TERM "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null && (( waited < STOP_TIMEOUT * 10 )); do
        sleep 0.1
        waited=$(( waited + 1 ))
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    set +e
    say "Cleaning up: web server, lab (with its agents and admin service)"
    if [[ -s $SERVER_PID_FILE ]]; then stop_pid "$(cat "$SERVER_PID_FILE")"; fi
    if [[ -n $SERVER_JOB ]]; then stop_pid "$SERVER_JOB"; wait "$SERVER_JOB" 2>/dev/null; fi
    if (( LAB_STARTED && ${#LAB_CLEANUP[@]} )); then qubes-lab "${LAB_CLEANUP[@]}"; fi
    rm -rf -- "$WORK_DIR"
    if (( status == 0 )); then say "Demo done"; else say "Demo FAILED (exit $status)"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { printf 'demo: %s\n' "$*" >&2; exit 1; }

admin_answers() {
    "$PYTHON" -c 'from qubes_portfwd.client import AdminClient; AdminClient().list_qubes()' \
        2>/dev/null
}

fetch() {
    qubes-lab exec lan -- curl -sS --max-time "$1" --interface "$LAN_CLIENT" "$URL"
}

(( EUID == 0 )) || fail "run as root (the lab is made of network namespaces)"

# Leave the lab as found: nothing if there was none, dom0's state if `down` had kept it,
# and a lab that was up stays up.
lab_status=$(qubes-lab status)
case ${lab_status%%$'\n'*} in
    "lab $DEMO_LAB: down") LAB_CLEANUP=(down --purge) ;;
    "lab $DEMO_LAB: down, dom0's state kept"*) LAB_CLEANUP=(down) ;;
esac

say "Building the lab: sys-net, sys-firewall, work, personal, a VPN, and a LAN outside"
shown "qubes-lab up"
LAB_STARTED=1
qubes-lab up
admin_answers || fail "the admin service does not answer on $QUBESD_SOCKET"

say "Starting a web server in work on port 8080"
mkdir -p "$WORK_DIR/www"
echo "Hello from the qube work, reached through a Qubes port forward!" >"$WORK_DIR/www/index.html"
shown "qubes-lab exec work -- python3 -m http.server 8080"
# sh records the server's PID, then becomes the server, so cleanup can stop exactly it.
qubes-lab exec work -- sh -c 'echo $$ >"$1"; exec "$2" -m http.server 8080 --directory "$3"' \
    sh "$SERVER_PID_FILE" "$PYTHON" "$WORK_DIR/www" >/dev/null 2>&1 &
SERVER_JOB=$!
deadline=$(( SECONDS + LISTEN_TIMEOUT ))
until qubes-lab exec work -- ss -Hltn 'sport = :8080' | grep -q ':8080'; do
    (( SECONDS < deadline )) || fail "the web server in work did not start listening"
    sleep 0.1
done

say "Before any forward, the LAN client $LAN_CLIENT cannot reach work"
shown "curl --interface $LAN_CLIENT $URL   (from the LAN)"
if fetch 2 >/dev/null 2>&1; then fail "work is reachable from the LAN without a forward"; fi
echo "refused, as Qubes' default rules want"

say "One command forwards TCP port 80 of the outside to port 8080 of work"
shown "qvm-portfwd add work tcp 80:8080 --external --from 192.0.2.0/24"
FORWARD_ID=$(qvm-portfwd add work tcp 80:8080 --external --from 192.0.2.0/24)
echo "$FORWARD_ID"

say "The LAN client asks sys-net's LAN address for the page"
shown "curl --interface $LAN_CLIENT $URL   (from the LAN)"
deadline=$(( SECONDS + REACH_TIMEOUT ))
until fetch 3 2>/dev/null; do
    (( SECONDS < deadline )) || fail "the forward did not work within ${REACH_TIMEOUT}s"
    sleep 0.2
done

say "Every forward, with its path hop by hop and each hop's state"
shown "qvm-portfwd list"
qvm-portfwd list

say "Removing the forward"
shown "qvm-portfwd del $FORWARD_ID"
qvm-portfwd del "$FORWARD_ID"

say "The same request is refused now"
shown "curl --interface $LAN_CLIENT $URL   (from the LAN)"
if fetch 3; then fail "the page is still reachable after the forward was removed"; fi
echo "refused: the forward is gone from every hop"
