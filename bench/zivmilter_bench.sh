#!/usr/bin/env bash
# Case (c) of bench/throughput.sh: the real `zivmilter run`, securing every message.
# Every message to $ZIVMILTER_BENCH_RCPT gets a notification (email verification): the milter
# encrypts it into a fresh SQLite store (durable before accept) and rewrites the transaction.
# Case (cp) sets ZIVMILTER_BENCH_BACKEND=postgresql and ZIVMILTER_BENCH_DSN (a fresh, migrated
# database of a private cluster; its password comes from PGPASSFILE): the same, on PostgreSQL.
# ZIVMILTER_BENCH_METRICS_PORT=PORT serves the metrics there (the bench reads the store's
# group-commit batch sizes from them).
# ZIVMILTER_BENCH_PIECES=1 serves through bench/eom_pieces.py: CPU per end-of-message piece.
# ZIVMILTER_BENCH_CONTENT=1 turns every built-in content rule on (selection.content, issue 17;
# in the default mode all they only report): their added CPU per message, against a run without.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
dir=${ZIVMILTER_BENCH_DIR:?}
store="{path: $dir/store, key_file: $dir/store.key}"
if [[ ${ZIVMILTER_BENCH_BACKEND:-sqlite} == postgresql ]]; then
    store="{backend: postgresql, dsn: \"${ZIVMILTER_BENCH_DSN:?}\", path: $dir/store, key_file: $dir/store.key}"
fi
cat >"$dir/zivmilter.yaml" <<YAML
organization: {name: Bench, domains: [sender.test]}
milter: {socket: "${ZIVMILTER_BENCH_SOCKET:?}"}
store: $store
reinject: {host: 127.0.0.1, port: ${ZIVMILTER_BENCH_REINJECT_PORT:?}}
portal: {base_url: "https://secure.sender.test/"}
submission: {any_address_of_own_domains: true, spf: false}
logging: {level: warning}
YAML
if [[ -n ${ZIVMILTER_BENCH_METRICS_PORT:-} ]]; then  # the bench reads the commits' batch sizes
    echo "metrics: {listen: \"127.0.0.1:$ZIVMILTER_BENCH_METRICS_PORT\"}" >>"$dir/zivmilter.yaml"
fi
if [[ ${ZIVMILTER_BENCH_CONTENT:-0} == 1 ]]; then
    echo "selection: {content: {bsn: true, iban: true, payment_card: true}}" >>"$dir/zivmilter.yaml"
fi
echo "{}" >"$dir/facts.yaml"
"$REPO/.venv/bin/python" -m zivmilter keygen "$dir/store.key" >/dev/null
run=(-m zivmilter)
if [[ ${ZIVMILTER_BENCH_PIECES:-0} == 1 ]]; then  # CPU per piece of end-of-message, logged
    run=("$REPO/bench/eom_pieces.py")
fi
exec "$REPO/.venv/bin/python" "${run[@]}" run --config "$dir/zivmilter.yaml" --facts "$dir/facts.yaml"
