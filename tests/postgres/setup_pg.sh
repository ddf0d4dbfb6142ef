#!/usr/bin/env bash
# A throw-away PostgreSQL cluster for the tests: initdb + pg_ctl on 127.0.0.1:$HARNESS_PG_PORT,
# state (data, socket, log, status) in $HARNESS_PG_STATE. Runs the server as the unprivileged
# `postgres` user when started as root (as in CI), else as the invoking user. Installs Debian's
# postgresql with apt when initdb is missing (root only). Stops the server by its PID.
#
#   tests/postgres/setup_pg.sh start [--no-install]     # status in $HARNESS_PG_STATE/status
#   tests/postgres/setup_pg.sh stop
set -euo pipefail
STATE="${HARNESS_PG_STATE:-/tmp/harness-pg}"
PORT="${HARNESS_PG_PORT:-55432}"
DATA="$STATE/data"

bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
status() { echo "$*" >"$STATE/status"; echo "$*"; }

run_as() { # run_as CMD...: as postgres when root, else as ourselves
    if [[ $EUID -eq 0 ]]; then
        su postgres -s /bin/bash -c "$(printf '%q ' "$@")"
    else
        "$@"
    fi
}

start() {
    mkdir -p "$STATE"
    BIN="$(bin_dir)"
    if [[ -z "$BIN" || ! -x "$BIN/initdb" ]]; then
        if [[ "${1:-}" == "--no-install" || $EUID -ne 0 ]]; then
            status "down: PostgreSQL is not installed (apt-get install postgresql, as root)"
            exit 1
        fi
        export DEBIAN_FRONTEND=noninteractive
        if ! (apt-get update -qq && apt-get install -y -qq postgresql >/dev/null); then
            status "down: apt-get install postgresql failed"
            exit 1
        fi
        BIN="$(bin_dir)"
    fi
    if [[ -f "$DATA/postmaster.pid" ]] && kill -0 "$(head -1 "$DATA/postmaster.pid")" 2>/dev/null; then
        status "up port $PORT"
        return
    fi
    rm -rf "$DATA"
    mkdir -p "$DATA"
    chmod 755 "$STATE"
    if [[ $EUID -eq 0 ]]; then chown -R postgres "$STATE"; fi
    run_as "$BIN/initdb" -D "$DATA" -A trust -U postgres >"$STATE/initdb.log" 2>&1 \
        || { status "down: initdb failed (see $STATE/initdb.log)"; exit 1; }
    run_as "$BIN/pg_ctl" -D "$DATA" -l "$STATE/server.log" -w -t 60 \
        -o "-p $PORT -k $STATE -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" start \
        >/dev/null || { status "down: pg_ctl start failed (see $STATE/server.log)"; exit 1; }
    status "up port $PORT"
}

stop() {
    if [[ -f "$DATA/postmaster.pid" ]]; then
        pid="$(head -1 "$DATA/postmaster.pid")"
        kill -INT "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    status "stopped"
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) stop ;;
    *) echo "usage: $0 start [--no-install] | stop" >&2; exit 2 ;;
esac
