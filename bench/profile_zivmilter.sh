#!/usr/bin/env bash
# Case (c) of bench/throughput.sh under py-spy: where the milter's CPU goes, piece by piece.
#
#   PROFILE_OUT=/tmp/c.txt CASES=c ZIVMILTER_BENCH_CMD=$PWD/bench/profile_zivmilter.sh \
#       bench/throughput.sh
#   .venv/bin/python bench/profile_pieces.py /tmp/c.txt
#
# Serves zivmilter as bench/zivmilter_bench.sh does and samples it (py-spy record, raw collapsed
# stacks, non-blocking) from start to end: the bench kills the milter's session, py-spy (in a
# session of its own) then writes what it saw. py-spy comes with the test extra (pyproject).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
out=${PROFILE_OUT:?set PROFILE_OUT to the file py-spy writes}
"$REPO/bench/zivmilter_bench.sh" &
pid=$!
sleep 2  # past keygen: the exec'd milter is $pid from then on
setsid "$REPO/.venv/bin/py-spy" record --nonblocking --gil -r "${PROFILE_RATE:-250}" -f raw \
    -o "$out" -p "$pid" >"$out.log" 2>&1 </dev/null &
wait "$pid"
