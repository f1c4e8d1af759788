"""`make chaos`: faults injected into running daemons, measured the way a trading program sees it.

Two daemons share one Redis and a simulated Tradovate whose tokens live 30 s. A sampler reads
every token key ten times a second while Tradovate fails in every way, Redis is killed and comes
back empty, and the instance owning the most logins is killed with SIGKILL. Loopback only;
bounded under three minutes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from daemon.sim.environment import daemon_environment, seconds_until
from daemon.sim.observe import (
    Samples,
    TokenSampler,
    all_live,
    all_names,
    busiest_pid,
    owner_pids,
)
from daemon.sim.redis_server import RedisServer
from daemon.sim.tradovate import ACCOUNTS_PATH, RECOVERABLE_FAULTS, RENEW_PATH, FakeTradovate

CHAOS_TOKEN_LIFETIME_S = 30.0
RESTORE_TARGET_S = 15.0
FAILOVER_TARGET_S = 30.0


def chaos_environment(fake: FakeTradovate, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    env.update(
        daemon_environment(
            fake.base_url,
            fake.users.values(),
            redis_url,
            sec=fake.sec,
            budget_window_s=fake.budget_window_s,
            ORCA_LOG_FORMAT="json",
            # A hung call must end well inside a 30 s token's life (real ones live 80 min).
            ORCA_TRADOVATE_TIMEOUT="3",
        )
    )
    return env


def start_daemon(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "daemon", "run"], env=env, stdout=log_file, stderr=log_file
        )


def run_chaos(out: Callable[[str], None] = print) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="orca-chaos-"))
    fake = FakeTradovate(token_lifetime_s=CHAOS_TOKEN_LIFETIME_S).start()
    server = RedisServer(workdir=workdir).start()
    names = all_names(fake)
    client = server.client(socket_timeout=1, socket_connect_timeout=1)
    env = chaos_environment(fake, server.url)
    daemons = [start_daemon(env, workdir / f"daemon-{n}.log") for n in (1, 2)]
    sampler: TokenSampler | None = None
    logins = list(fake.users)
    restore: float | None = None
    failover: float | None = None
    try:
        out(
            f"chaos: 2 daemons, {len(fake.users)} logins, {len(names)} token keys, "
            f"tokens live {CHAOS_TOKEN_LIFETIME_S:.0f} s; logs in {workdir}"
        )
        warm_up = seconds_until(lambda: all_live(client, names, fake), 30)
        if warm_up is None:
            out("FAIL: the daemons never wrote every token")
            return 1
        out(f"warm-up: every key valid after {warm_up:.1f} s")
        sampler = TokenSampler(
            lambda: server.client(socket_timeout=1, socket_connect_timeout=1),
            names,
            fake.is_live,
        ).start()

        out("phase 1: Tradovate faults on renewals and account lists for 30 s")
        kinds = RECOVERABLE_FAULTS
        deadline = time.monotonic() + 30
        for n in range(10_000):
            if time.monotonic() > deadline:
                break
            # One fault pending at a time: a login meets at most one on each renewal.
            fake.clear_faults()
            path = RENEW_PATH if n % 3 else ACCOUNTS_PATH
            fake.inject(path, kinds[n % len(kinds)], user=logins[n % len(logins)], hang_s=5)
            time.sleep(2.0)
        fake.clear_faults()
        # Let the last fault's retries finish: every token renewed cleanly again.
        time.sleep(CHAOS_TOKEN_LIFETIME_S * 2 / 3)

        out("phase 2: Redis killed, restarted empty 3 s later")
        requests_before = fake.seen.received
        server.kill()
        time.sleep(3)
        with sampler.window("restore"):
            server.start()
            restore = seconds_until(lambda: all_live(client, names, fake), 30)
        logins_during_restore = fake.seen.received - requests_before
        out(
            f"  restored in {restore if restore is None else round(restore, 1)} s; "
            f"Tradovate requests meanwhile: {logins_during_restore} (renewals that fell due)"
        )

        out("phase 3: the instance owning the most logins is killed with SIGKILL")
        seconds_until(lambda: busiest_pid(client, logins) is not None, 15)
        pid = busiest_pid(client, logins)
        victim = next((d for d in daemons if d.pid == pid), None)
        if victim is None:
            out("FAIL: not every login has an owner")
            return 1
        survivor = next(d for d in daemons if d is not victim)
        with sampler.window("failover"):
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            killed_at = time.monotonic()
            failover = seconds_until(
                lambda: set(owner_pids(client, logins).values()) == {survivor.pid},
                FAILOVER_TARGET_S + 15,
            )
            seconds_until(lambda: all_live(client, names, fake), 10)
        taken_s = failover if failover is None else round(failover, 1)
        out(f"  every login owned again after {taken_s} s")
        # One more token lifetime, so the survivor has to renew what it took over.
        time.sleep(max(0.0, CHAOS_TOKEN_LIFETIME_S + 5 - (time.monotonic() - killed_at)))
    finally:
        samples = sampler.stop() if sampler is not None else Samples()
        for daemon in daemons:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    daemon.kill()
        server.stop()
        fake.stop()

    sessions = dict(sorted(fake.seen.sessions_opened.items()))
    out("")
    out(f"samples taken:                 {samples.taken} ({len(names)} keys each)")
    out(f"stale-token samples:           {samples.stale}")
    windows = ", ".join(f"+{n} during {w}" for w, n in samples.missing_in.items()) or "none"
    out(
        f"missing-token samples:         {samples.missing} outside the windows "
        f"({windows}; {samples.unreadable} reads failed with Redis down)"
    )
    out(f"sessions opened per login:     {sessions}")
    out(f"renewals per login:            {dict(sorted(fake.seen.renewals.items()))}")
    out(f"time to restore after loss:    {'never' if restore is None else f'{restore:.1f} s'}")
    out(f"failover time:                 {'never' if failover is None else f'{failover:.1f} s'}")
    verdicts = {
        "0 stale samples": samples.stale == 0,
        "0 missing samples outside the restore and failover windows": samples.missing == 0,
        "one session per login": set(sessions.values()) == {1} and len(sessions) == len(logins),
        f"restore within {RESTORE_TARGET_S:.0f} s": restore is not None
        and restore <= RESTORE_TARGET_S,
        f"failover within {FAILOVER_TARGET_S:.0f} s": failover is not None
        and failover <= FAILOVER_TARGET_S,
    }
    for name, ok in verdicts.items():
        out(f"{'PASS' if ok else 'FAIL'}: {name}")
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(run_chaos())
