#!/usr/bin/env bash
# orca-token-daemon on a plain VM, without systemd:
#   deploy/orca-tokens-nohup.sh start|stop|status|restart
#
# One daemon per pidfile: a second start is refused while one runs. Logs are JSON lines in
# $ORCA_LOG_DIR/orca-tokens.log, rotated by size by the daemon itself (ORCA_LOG_MAX_BYTES,
# ORCA_LOG_BACKUPS); anything printed before logging starts goes to orca-tokens.out. `stop` sends
# SIGTERM and waits for the clean exit. Configuration: the usual environment or a .env in
# $ORCA_HOME (see README). Exit codes: 0 done (status: running), 1 failed, 2 usage, 3 not running.
set -euo pipefail

ORCA_HOME=${ORCA_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
ORCA_BIN=${ORCA_BIN:-$ORCA_HOME/.venv/bin/orca-tokens}
ORCA_RUN_DIR=${ORCA_RUN_DIR:-$ORCA_HOME/run}
ORCA_LOG_DIR=${ORCA_LOG_DIR:-$ORCA_HOME/logs}
ORCA_STOP_TIMEOUT=${ORCA_STOP_TIMEOUT:-15}
PIDFILE=$ORCA_RUN_DIR/orca-tokens.pid
OUTFILE=$ORCA_LOG_DIR/orca-tokens.out
export ORCA_LOG_FILE=${ORCA_LOG_FILE:-$ORCA_LOG_DIR/orca-tokens.log}
export ORCA_LOG_FORMAT=${ORCA_LOG_FORMAT:-json}

say() { printf 'orca-tokens: %s\n' "$*"; }

running_pid() {
    # The pid in the pidfile, if that process is alive and is still our daemon.
    [[ -f $PIDFILE ]] || return 1
    local pid
    pid=$(<"$PIDFILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    grep -qa -- "run" "/proc/$pid/cmdline" 2>/dev/null || return 1
    printf '%s\n' "$pid"
}

start() {
    local pid
    if pid=$(running_pid); then
        say "already running (pid $pid); refusing to start a second daemon"
        return 1
    fi
    [[ -x $ORCA_BIN ]] || { say "$ORCA_BIN is not executable (make install, or set ORCA_BIN)"; return 1; }
    mkdir -p "$ORCA_RUN_DIR" "$ORCA_LOG_DIR"
    rm -f "$PIDFILE"
    [[ -f $OUTFILE ]] && mv -f "$OUTFILE" "$OUTFILE.1"
    cd "$ORCA_HOME"
    nohup "$ORCA_BIN" run >"$OUTFILE" 2>&1 </dev/null &
    pid=$!
    printf '%s\n' "$pid" >"$PIDFILE"
    # A bad configuration exits at once (78): say so instead of claiming success.
    for _ in $(seq 1 20); do
        if ! kill -0 "$pid" 2>/dev/null; then
            local code=0
            wait "$pid" || code=$?
            rm -f "$PIDFILE"
            say "exited at once with code $code; see $ORCA_LOG_FILE and $OUTFILE"
            tail -n 5 "$ORCA_LOG_FILE" 2>/dev/null || true
            return 1
        fi
        if grep -q '"daemon.ready"' "$ORCA_LOG_FILE" 2>/dev/null; then
            break
        fi
        sleep 0.25
    done
    say "started (pid $pid); logs in $ORCA_LOG_FILE"
}

stop() {
    local pid
    if ! pid=$(running_pid); then
        rm -f "$PIDFILE"
        say "not running"
        return 0
    fi
    kill -TERM "$pid"
    local waited=0
    while kill -0 "$pid" 2>/dev/null; do
        if (( waited >= ORCA_STOP_TIMEOUT * 4 )); then
            say "pid $pid did not exit within ${ORCA_STOP_TIMEOUT}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            rm -f "$PIDFILE"
            return 1
        fi
        sleep 0.25
        waited=$((waited + 1))
    done
    rm -f "$PIDFILE"
    say "stopped (pid $pid)"
}

status() {
    local pid
    if pid=$(running_pid); then
        say "running (pid $pid)"
        return 0
    fi
    say "not running"
    return 3
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    restart) stop && start ;;
    *) echo "usage: $0 start|stop|status|restart" >&2; exit 2 ;;
esac
