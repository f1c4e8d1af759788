#!/usr/bin/env bash
# orca-token-daemon on a plain VM, without systemd:
#   deploy/orca-tokens-nohup.sh start|stop|status|restart
#
# One daemon per pidfile: a second start is refused while one runs. Logs are JSON lines in
# $ORCA_LOG_DIR/orca-tokens.log, rotated by size by the daemon itself (ORCA_LOG_MAX_BYTES,
# ORCA_LOG_BACKUPS); anything printed before logging starts goes to orca-tokens.out. `stop` sends
# SIGTERM and waits for the clean exit. Configuration: the usual environment or a .env in
# $ORCA_HOME (see docs/deploy.md#running-with-nohup-on-a-vm). Exit codes: 0 done (status: running), 1 failed, 2 usage, 3 not running.
#
# The pidfile and logs live outside the checkout, under $ORCA_STATE_DIR (default
# ${XDG_STATE_HOME:-~/.local/state}/orca-token-daemon); the pidfile is 0600, logs 0640. A pid is
# reported or signalled only when that process is this launcher's daemon: its command line is
# exactly "$ORCA_BIN run" (after the interpreter a console script runs under).
set -euo pipefail

ORCA_HOME=${ORCA_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
ORCA_BIN=${ORCA_BIN:-$ORCA_HOME/.venv/bin/orca-tokens}
ORCA_STATE_DIR=${ORCA_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/orca-token-daemon}
ORCA_RUN_DIR=${ORCA_RUN_DIR:-$ORCA_STATE_DIR/run}
ORCA_LOG_DIR=${ORCA_LOG_DIR:-$ORCA_STATE_DIR/logs}
ORCA_STOP_TIMEOUT=${ORCA_STOP_TIMEOUT:-15}
PIDFILE=$ORCA_RUN_DIR/orca-tokens.pid
OUTFILE=$ORCA_LOG_DIR/orca-tokens.out
export ORCA_LOG_FILE=${ORCA_LOG_FILE:-$ORCA_LOG_DIR/orca-tokens.log}
export ORCA_LOG_FORMAT=${ORCA_LOG_FORMAT:-json}

say() { printf 'orca-tokens: %s\n' "$*"; }

is_our_daemon() {
    # Its arguments end with exactly: $ORCA_BIN run (a stale pidfile may name any process).
    local args
    args=$(tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null) || return 1
    [[ $(printf '%s\n' "$args" | tail -n 2) == "$ORCA_BIN"$'\n'"run" ]]
}

running_pid() {
    # The pid in the pidfile, if that process is alive and is still our daemon.
    [[ -f $PIDFILE ]] || return 1
    local pid
    pid=$(<"$PIDFILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    is_our_daemon "$pid" || return 1
    printf '%s\n' "$pid"
}

start() {
    local pid
    if pid=$(running_pid); then
        say "already running (pid $pid); refusing to start a second daemon"
        return 1
    fi
    if [[ ! -x $ORCA_BIN ]]; then
        say "$ORCA_BIN is not executable: run \`make demo\` once in $ORCA_HOME (it builds .venv), or set ORCA_BIN"
        return 1
    fi
    mkdir -p -m 0700 "$ORCA_RUN_DIR" "$ORCA_LOG_DIR"
    rm -f "$PIDFILE"
    [[ -f $OUTFILE ]] && mv -f "$OUTFILE" "$OUTFILE.1"
    cd "$ORCA_HOME"
    umask 027  # logs 0640
    local logged_before
    logged_before=$(stat -c %s "$ORCA_LOG_FILE" 2>/dev/null || echo 0)
    nohup "$ORCA_BIN" run >"$OUTFILE" 2>&1 </dev/null &
    pid=$!
    (umask 077 && printf '%s\n' "$pid" >"$PIDFILE")
    # A bad configuration exits at once (78): say so instead of claiming success.
    for _ in $(seq 1 20); do
        if ! kill -0 "$pid" 2>/dev/null; then
            local code=0
            wait "$pid" || code=$?
            rm -f "$PIDFILE"
            say "exited at once with code $code; the reason:"
            # Before logging starts (a bad configuration) the reason is on stderr, in .out.
            tail -n 5 "$OUTFILE" 2>/dev/null || true
            tail -c "+$((logged_before + 1))" "$ORCA_LOG_FILE" 2>/dev/null | tail -n 5 || true
            return 1
        fi
        # Ready: this run's own daemon.ready line (the instance id carries its pid), never an
        # earlier run's in the appended log.
        if grep -a '"daemon.ready"' "$ORCA_LOG_FILE" 2>/dev/null | grep -q ":$pid:"; then
            say "started (pid $pid); logs in $ORCA_LOG_FILE"
            return 0
        fi
        sleep 0.25
    done
    say "started (pid $pid), not ready after 5 s yet; watch $ORCA_LOG_FILE"
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
