#!/usr/bin/env bash
# Guest portal throughput: verified message views per second and p99 latency, measured with wrk
# (Debian's `wrk`) against a real `zivmilter portal` process on loopback. Target on a 2-core
# machine: 300 views/s served with p99 < 100 ms.
#
#   bench/portal.sh [--workers N] [--duration SECONDS] [--connections N] [--rate VIEWS_PER_S]
#   bench/portal.sh --postgresql [--nodes 2] [--workers N] ...
#
# Two measurements:
# - closed loop (the default): wrk keeps --connections requests in flight (50), each sent as the
#   last one's answer arrives: the most views/s the portal can serve. Its latency is the queue's,
#   by Little's law mean latency = connections / throughput, so it says little about a load
#   below saturation.
# - open loop (--rate N): views arrive at N per second in total over the nodes, as independent
#   visitors do (Poisson arrivals: exponential gaps drawn in wrk's Lua `delay()`, each send
#   scheduled at its arrival time, whenever the previous answers came), over enough connections
#   that they are never the limit. The latency at a given load: what "serves 300 views/s with
#   p99 < 100 ms" states. A view's latency is from sending its first request to the last answer:
#   an HTML view sends the page and its frame at once on one connection (HTTP/1.1 pipelining;
#   the portal answers them in turn, so it is the page's time plus the frame's, as a browser
#   that asks for the frame when the page arrives waits, less a loopback round trip). It prints
#   offered and achieved views/s (achieved below offered: the rate was not served) and p50/p99
#   per node; "sent late" is how far behind its arrival time a view left (a connection was not
#   free, or wrk itself got no CPU): near 0 when the connections are not the limit, else the
#   latency figures miss that wait.
#   (Debian's `hey -q` paces each worker closed-loop at a fixed rate, which hides the queue a
#   slow answer builds; wrk2 is not in Debian: hence wrk with a Lua schedule.)
#
# --postgresql: the store is a fresh database of a private PostgreSQL cluster (initdb as the
# postgres user, tests/harness/postgres.py), so the bench reruns itself inside scripts/sandbox
# (root); --nodes N starts N portal processes (each with --workers N) on that one database, and
# wrk splits the connections over them (one wrk per node, at once): views/s is their sum, p99
# the worst node's. A session verified on one node is replayed on every node (the cookie keys
# derive from the shared key file), as behind a load balancer without stickiness.
#
# A throwaway store gets one message per kind; a verified session is obtained over HTTP exactly
# as a browser does it (open the link, submit the access code), then wrk replays that session:
#   text:  a plain-text message with a PDF attachment; one view = the message page;
#   html:  an HTML message with an inline image; one view = the page plus its sandboxed frame.
# Nothing leaves loopback; everything it started is stopped (by pid) and removed on exit.
#
# Besides views/s and p99 it prints the CPU time one view costs the portal processes (uvicorn's
# workers included) and, with --postgresql, the database server (every backend): on a machine
# that others load too, throughput and latency move with their load; CPU per view much less.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WORKERS=2
DURATION=15
CONNECTIONS=""
RATE=""
NODES=1
BACKEND=sqlite
args=("$@")
while [[ $# -gt 0 ]]; do
    case $1 in
        --workers) WORKERS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --connections) CONNECTIONS=$2; shift 2 ;;
        --nodes) NODES=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --postgresql) BACKEND=postgresql; shift ;;
        *) echo "usage: bench/portal.sh [--postgresql] [--nodes N] [--workers N] [--duration S] [--connections N] [--rate VIEWS_PER_S]" >&2; exit 2 ;;
    esac
done
[[ -z $RATE || $RATE =~ ^[1-9][0-9]*$ ]] || { echo "bench/portal.sh: --rate takes views per second (a whole number)" >&2; exit 2; }
if [[ -z $CONNECTIONS && -n $RATE ]]; then
    # Enough that a free one is always there: a second of arrivals (a view holds one while
    # it is answered), at least 32 per node.
    CONNECTIONS=$((RATE > 32 * NODES ? RATE : 32 * NODES))
fi
CONNECTIONS=${CONNECTIONS:-50}
command -v wrk >/dev/null || { echo "bench/portal.sh: needs wrk (apt-get install wrk)" >&2; exit 2; }
if [[ $BACKEND == postgresql && "${ZIVMILTER_SANDBOX:-}" != 1 ]]; then
    exec scripts/sandbox "$PWD/bench/portal.sh" "${args[@]}"
fi

work=$(mktemp -d /tmp/zivmilter-portal-bench.XXXXXX)
chmod 755 "$work"
portal_pids=()
pg_data=""
cleanup() {
    for pid in "${portal_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n $pg_data ]]; then
        runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$pg_data" -m fast -w stop \
            >/dev/null || true
        rm -rf "$(dirname "$pg_data")" "$(dirname "$PGPASSFILE")"
    fi
    rm -rf "$work"
}
trap cleanup EXIT

store="{path: $work/store, key_file: $work/store.key}"
if [[ $BACKEND == postgresql ]]; then
    # A private cluster and a migrated database; prints DATA-DIR PGPASSFILE DSN.
    read -r pg_data passfile dsn < <($PY -c '
from tests.harness.postgres import Cluster
c = Cluster().start()
print(c.data, c.passfile, c.dsn(c.new_database()))')
    export PGPASSFILE=$passfile
    store="{backend: postgresql, dsn: \"$dsn\", path: $work/store, key_file: $work/store.key}"
fi

$PY -m zivmilter keygen "$work/store.key" >/dev/null
ports=()
for ((n = 0; n < NODES; n++)); do
    port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    ports+=("$port")
    cat >"$work/zivmilter-$n.yaml" <<YAML
organization: {name: Bench Hospital, domains: [hospital.example]}
store: $store
portal: {base_url: "http://127.0.0.1:$port/", listen: "127.0.0.1:$port"}
sms: {backend: file, file: $work/sms.log}
logging: {level: warning}
YAML
    $PY -m zivmilter portal --config "$work/zivmilter-$n.yaml" --workers "$WORKERS" \
        2>"$work/portal-$n.log" &
    portal_pids+=($!)
done
for ((n = 0; n < NODES; n++)); do
    port=${ports[$n]}
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fs "http://127.0.0.1:$port/healthz" >/dev/null || { cat "$work/portal-$n.log"; exit 1; }
done
port=${ports[0]}

# Store two messages and verify as their recipient over HTTP; prints KIND PATH COOKIE lines.
sessions=$($PY - "$work/zivmilter-0.yaml" "$port" <<'PYTHON'
import re, sys, urllib.parse, urllib.request
from email.message import EmailMessage
from email.policy import SMTP
from zivmilter.core import config
from zivmilter.store import NewMessage, NewRecipient, open_store

cfg = config.load(sys.argv[1])
base = f"http://127.0.0.1:{sys.argv[2]}"
store = open_store(cfg)

def message(html: bool) -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "Dr. Alice <alice@hospital.example>", "bob@example.net", "Lab results"
    m["Message-ID"] = "<bench@hospital.example>"
    m.set_content("Dear Bob,\n\n" + "Your results are within the normal range. " * 40 + "\n\nAlice\n")
    if html:
        m.add_alternative("<h2>Results</h2><p>" + "Your results are <b>normal</b>. " * 40
                          + "<img src='cid:logo@h'></p>", subtype="html")
        m.get_body(("html",)).add_related(b"\x89PNG\r\n\x1a\n" + bytes(600), maintype="image",
                                           subtype="png", cid="<logo@h>")
    m.add_attachment(bytes(range(256)) * 200, maintype="application", subtype="pdf", filename="results.pdf")
    return m.as_bytes(policy=SMTP)

class Jar(urllib.request.HTTPCookieProcessor):
    pass

for kind in ("text", "html"):
    saved = store.save_message(NewMessage(
        sender="alice@hospital.example", subject="Lab results", content=message(kind == "html"),
        recipients=[NewRecipient("bob@example.net", 1, "custom_access_right", "notification", "A3",
                                 verification="access_code", access_code="bench-code-1")]))
    jar = urllib.request.HTTPCookieProcessor()
    opener = urllib.request.build_opener(jar)
    first = opener.open(base + "/m/" + saved.tokens["bob@example.net"]).read().decode()
    path = re.search(r'url=(/r/\d+/)"', first).group(1)
    page = opener.open(base + path).read().decode()
    token = re.search(r'action="[^"]*verify"[^>]*>\s*<input type="hidden" name="csrf" value="([^"]+)"', page).group(1)
    data = urllib.parse.urlencode({"csrf": token, "code": "bench-code-1"}).encode()
    shown = opener.open(urllib.request.Request(base + path + "verify", data=data,
                                               headers={"Origin": base})).read().decode()
    assert 'id="subject"' in shown, "verification failed"
    cookie = "; ".join(f"{c.name}={c.value}" for c in jar.cookiejar)
    print(kind, path, cookie)
store.close()
PYTHON
)

cpu_ticks() {  # PID... -> CPU clock ticks of these processes and their descendants so far
    $PY - "$@" <<'PYTHON'
import os, sys
procs = {}
for name in os.listdir("/proc"):
    if name.isdigit():
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        # ppid; utime + stime + cutime + cstime (the last two: children that ended, reaped)
        procs[int(name)] = (int(fields[1]), sum(int(v) for v in fields[11:15]))
mine = {int(p) for p in sys.argv[1:]}
while True:
    more = {pid for pid, (ppid, _) in procs.items() if ppid in mine} - mine
    if not more:
        break
    mine |= more
print(sum(procs[pid][1] for pid in mine if pid in procs))
PYTHON
}
pg_pid=""  # the postmaster: its backends are its children
[[ -z $pg_data ]] || pg_pid=$(head -1 "$pg_data/postmaster.pid")

# The open loop's request schedule (--rate): wrk calls `delay()` when a connection is free to
# send and `request()` when it sends; the arrivals are one Poisson process per wrk (at its
# share of the rate), handed in turn to whichever connection is free. LuaJIT's ffi reads the
# monotonic clock (wrk's Lua has none finer than a second). `done()` prints the latency
# percentiles and how late the sends left ("zv-" lines, parsed below).
rate_lua() {  # VIEWS_PER_S PATH... -> the script on stdout: each view asks for every PATH
    local rps=$1
    shift
    printf 'local paths = {'
    printf '"%s", ' "$@"
    printf '}\nlocal rate = %s / 1000 -- views per ms\n' "$rps"
    cat <<'LUA'
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } zv_timespec;
int clock_gettime(int, zv_timespec *);
]]
local ts = ffi.new("zv_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local next_at, queue, head, tail = nil, {}, 1, 0
late = {} -- a global: done() reads it through thread:get
init = function(args)
  ffi.C.clock_gettime(0, ts)
  math.randomseed(tonumber(ts.tv_nsec))
end
delay = function()
  local now = now_ms()
  next_at = (next_at or now) - math.log(1 - math.random()) / rate
  tail = tail + 1
  queue[tail] = next_at
  local wait = next_at - now
  if wait <= 0 then return 0 end
  return math.floor(wait + 0.5) -- wrk's timers count whole ms
end
request = function()
  local at = queue[head]
  if at ~= nil then
    queue[head] = nil
    head = head + 1
    late[#late + 1] = now_ms() - at
  end
  local view = {}
  for i, path in ipairs(paths) do view[i] = wrk.format("GET", path) end
  return table.concat(view) -- pipelined: wrk times the view to its last answer
end
local threads = {}
setup = function(thread) threads[#threads + 1] = thread end
done = function(summary, latency, requests)
  local all = {}
  for _, t in ipairs(threads) do
    for _, v in ipairs(t:get("late")) do all[#all + 1] = math.max(0, v) end
  end
  table.sort(all)
  local p99 = #all > 0 and all[math.max(1, math.ceil(#all * 0.99))] or 0
  io.write(string.format("zv-latency %.3f %.3f\n", latency:percentile(50) / 1000,
                         latency:percentile(99) / 1000))
  io.write(string.format("zv-late %.1f %.1f\n", p99, all[#all] or 0))
end
LUA
}

run() {  # KIND PATH COOKIE -> "requests/s p99_ms portal_ms_per_request pg_ms_per_request" and,
    # with --rate, "p50_ms late_p99_ms node_figures" after them
    local kind=$1 path=$2 cookie=$3 lua="$work/$1.lua" per_view=1
    [[ $kind == html ]] && per_view=2
    local per_node=$(((CONNECTIONS + NODES - 1) / NODES)) pids=() n
    local -a extra=()
    if [[ -n $RATE ]]; then
        local node_rps
        node_rps=$(awk -v r="$RATE" -v n="$NODES" 'BEGIN {print r / n}')
        if [[ $kind == html ]]; then
            rate_lua "$node_rps" "$path" "${path}body" >"$lua"
        else
            rate_lua "$node_rps" "$path" >"$lua"
        fi
        # an overloaded portal shows as latency, not as wrk's 2 s timeouts
        extra=(--timeout 30s)
    elif [[ $kind == html ]]; then
        printf 'local n = 0\nrequest = function()\n  n = n + 1\n  if n %% 2 == 0 then return wrk.format("GET", "%sbody") end\n  return wrk.format("GET", "%s")\nend\n' "$path" "$path" >"$lua"
    else
        printf 'request = function() return wrk.format("GET", "%s") end\n' "$path" >"$lua"
    fi
    # Warm up, then measure: one wrk per node at once, the connections split between them.
    for ((n = 0; n < NODES; n++)); do
        wrk -t1 -c"$per_node" -d3s "${extra[@]}" -H "Cookie: $cookie" -s "$lua" \
            "http://127.0.0.1:${ports[$n]}" >/dev/null &
        pids+=($!)
    done
    wait "${pids[@]}"
    pids=()
    # the open loop's schedule is one per wrk thread: one thread, as many connections
    local threads=1
    [[ $NODES -gt 1 || -n $RATE ]] || threads=2
    local portal0 pg0
    portal0=$(cpu_ticks "${portal_pids[@]}")
    pg0=$([[ -n $pg_pid ]] && cpu_ticks "$pg_pid" || echo 0)
    for ((n = 0; n < NODES; n++)); do
        wrk -t"$threads" -c"$per_node" -d"${DURATION}s" --latency \
            "${extra[@]}" -H "Cookie: $cookie" -s "$lua" "http://127.0.0.1:${ports[$n]}" \
            >"$work/$kind-$n.out" &
        pids+=($!)
    done
    wait "${pids[@]}"
    local portal1 pg1 requests=0
    portal1=$(cpu_ticks "${portal_pids[@]}")
    pg1=$([[ -n $pg_pid ]] && cpu_ticks "$pg_pid" || echo 0)
    local rps=0 p99=0 p50=0 late=0 nodes="" one_rps one_p99 one_p50 one_late out
    for ((n = 0; n < NODES; n++)); do
        out="$work/$kind-$n.out"
        if grep -qE "Non-2xx|Socket errors" "$out"; then
            echo "bench/portal.sh: errors during the $kind run on node $n:" >&2
            cat "$out" >&2
            exit 1
        fi
        one_rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
        if [[ -n $RATE ]]; then
            read -r one_p50 one_p99 < <(awk '$1 == "zv-latency" {print $2, $3}' "$out")
            one_late=$(awk '$1 == "zv-late" {print $2}' "$out")
            p50=$(awk -v a="$p50" -v b="$one_p50" 'BEGIN {print (b > a) ? b : a}')
            late=$(awk -v a="$late" -v b="$one_late" 'BEGIN {print (b > a) ? b : a}')
            nodes+=$(awk -v n="$n" -v r="$one_rps" -v k="$per_view" -v a="$one_p50" -v b="$one_p99" \
                'BEGIN {printf "%snode %d: %.0f views/s p50 %.1f p99 %.1f ms", (n ? "; " : ""), n, r / k, a, b}')
        else
            one_p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}' "$out")
        fi
        requests=$((requests + $(awk '/requests in/ {print $1}' "$out")))
        rps=$(awk -v a="$rps" -v b="$one_rps" 'BEGIN {printf "%.2f", a + b}')
        p99=$(awk -v a="$p99" -v b="$one_p99" 'BEGIN {print (b > a) ? b : a}')
    done
    local hz
    hz=$(getconf CLK_TCK)
    awk -v r="$rps" -v p="$p99" -v n="$requests" -v hz="$hz" -v a=$((portal1 - portal0)) \
        -v b=$((pg1 - pg0)) 'BEGIN {printf "%s %s %.3f %.3f", r, p, a * 1000 / hz / n, b * 1000 / hz / n}'
    if [[ -n $RATE ]]; then
        printf ' %s %s %s' "$p50" "$late" "$nodes"
    fi
    echo
}

if [[ -n $RATE ]]; then
    mode="open loop at $RATE views/s in total, $CONNECTIONS connections"
else
    mode="closed loop, $CONNECTIONS connections"
fi
echo "zivmilter portal bench: $BACKEND, $NODES node(s) x $WORKERS worker(s), $mode, ${DURATION}s per run, $(nproc) CPU(s)"
status=0
while read -r kind path cookie; do
    per_view=1
    [[ $kind == html ]] && per_view=2
    read -r rps p99 portal_ms pg_ms p50 late nodes < <(run "$kind" "$path" "$cookie")
    views=$(awk -v r="$rps" -v k="$per_view" 'BEGIN {printf "%.0f", r / k}')
    if [[ -n $RATE ]]; then
        # A Poisson count over the run moves by a few per cent: 5 % short is not serving it.
        served=$(awk -v v="$views" -v o="$RATE" 'BEGIN {print (v >= 0.95 * o) ? 1 : 0}')
        verdict=$(awk -v s="$served" -v o="$RATE" -v p="$p99" 'BEGIN {print (s && o >= 300 && p < 100) ? "ok" : "BELOW TARGET"}')
        printf '  %-4s views: offered %s views/s, achieved %s views/s (%s req/s, %d request(s) per view)\n' \
            "$kind" "$RATE" "$views" "$rps" "$per_view"
        [[ $served == 1 ]] || printf '        THE RATE WAS NOT SERVED: %s of %s views/s\n' "$views" "$RATE"
        printf '        latency per view, worst node: p50 %.1f ms, p99 %.1f ms  [%s]\n' "$p50" "$p99" "$verdict"
        printf '        %s\n' "$nodes"
        printf '        sent late (behind the schedule): p99 %s ms\n' "$late"
    else
        verdict=$(awk -v v="$views" -v p="$p99" 'BEGIN {print (v >= 300 && p < 100) ? "ok" : "BELOW TARGET"}')
        printf '  %-4s views: %6s views/s (%s req/s, %d request(s) per view)  p99 %s ms  [%s]\n' \
            "$kind" "$views" "$rps" "$per_view" "$p99" "$verdict"
    fi
    [[ $verdict == ok ]] || status=1
    cpu=$(awk -v a="$portal_ms" -v b="$pg_ms" -v k="$per_view" 'BEGIN {printf "portal %.2f ms", a * k; if (b > 0) printf ", PostgreSQL %.2f ms", b * k}')
    printf '        CPU per view: %s\n' "$cpu"
done <<<"$sessions"
exit $status
