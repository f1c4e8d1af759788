"""Scale out: more logins than the budgets keep alive (LOGINS_PER_GROUP per group), the
simulator enforcing Tradovate's per-/24 budgets, daemons bound to 1, 4 and 10 loopback /24s
(127.0.N.1), each its own budget group.

Time runs faster than Tradovate's: tokens live CAPACITY_TOKEN_S seconds instead of 80 minutes,
and the budgets' hour shrinks with them, so each group still renews 15 tokens an hour of its
own. A login is kept alive when its one session's token was renewed through the whole run (no
lapse, no second session); beside it, the arithmetic limit 14 x (80 - floor) / 60 per group.
Then the handover: an instance killed with SIGKILL and one rejoining,
sampled the way a trading program reads, on one Redis server and on a 3-node Redis Cluster.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from bench.idle import stop_all
from daemon.config import load_redis_settings
from daemon.constants import RENEW_LEAD_FLOOR_S
from daemon.sim.environment import daemon_environment, seconds_until
from daemon.sim.observe import TokenSampler, all_names, busiest_pid, owner_pids, shared_as_assigned
from daemon.sim.redis_server import RedisServer, redis_cluster
from daemon.sim.tradovate import FakeTradovate, numbered_desk
from daemon.store.client import build_client, get_many

LOGINS = 120  # the handover's desk
LOGINS_PER_GROUP = 20  # more than one group's budget keeps alive
ADDRESS_COUNTS = (1, 4, 10)
CAPACITY_TOKEN_S = 80.0  # one "hour" is 60 s: a second of scheduling is a minute of it
CAPACITY_LIFETIMES = 2.5  # run this many token lifetimes after the first valid token
HANDOVER_TOKEN_S = 240.0  # long enough that only the handover is measured, not renewals
HANDOVER_ADDRESSES = 10
USABLE_RENEWALS = 14  # Tradovate's 15 an hour, less the reserve of one
TOKEN_MINUTES = 80
FLOOR_MINUTES = RENEW_LEAD_FLOOR_S / 60
FIRST_ALONE_S = 6.0  # one instance takes every login, renews some, then the others join


@dataclass
class Desk:
    fake: FakeTradovate
    redis_url: str
    client: redis.Redis
    workdir: Path
    cluster: bool = False

    def start(self, address: int) -> subprocess.Popen[bytes]:
        env = daemon_environment(
            self.fake.base_url,
            self.fake.users.values(),
            self.redis_url,
            sec=self.fake.sec,
            budget_window_s=self.fake.budget_window_s,
            TRADOVATE_LOCAL_ADDRESS=f"127.0.{address}.1",  # one /24 each: own budgets
            ORCA_BUDGET_GROUP=f"address-{address}",
            # Tradovate's 10 logins a minute would make the first start take 12 minutes;
            # it is lifted on both sides, the hourly budgets are not.
            ORCA_AUTH_RATE_LIMIT="100000",
            ORCA_LOG_LEVEL="warning",
            **({"REDIS_CLUSTER": "true"} if self.cluster else {}),
        )
        log = (self.workdir / f"daemon-{address}-{time.monotonic_ns()}.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "daemon", "run"], env=env, stdout=log, stderr=log
        )


@contextmanager
def instances(
    desk: Desk, addresses: int, *, first_alone_s: float = 0.0
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """One instance per address; with `first_alone_s`, the first runs that long alone."""
    started = [desk.start(1)]
    time.sleep(first_alone_s)  # the start being measured: the others join this late
    started += [desk.start(n) for n in range(2, addresses + 1)]
    try:
        yield started
    finally:
        stop_all(started, timeout_s=15)


def valid_logins(desk: Desk) -> set[str]:
    names = list(desk.fake.users)
    values = get_many(desk.client, [f"token:{name}" for name in names])
    return {n for n, v in zip(names, values, strict=True) if v and desk.fake.is_live(str(v))}


def capacity_run(
    server: RedisServer, workdir: Path, addresses: int, first_alone_s: float = 0.0
) -> dict[str, float]:
    server.client().flushall()
    logins = LOGINS_PER_GROUP * addresses
    with FakeTradovate(numbered_desk(logins, 1), token_lifetime_s=CAPACITY_TOKEN_S) as fake:
        desk = Desk(fake, server.url, server.client(), workdir)
        with instances(desk, addresses, first_alone_s=first_alone_s):
            first_valid = seconds_until(lambda: len(valid_logins(desk)) == logins, 60)
            time.sleep(CAPACITY_TOKEN_S * CAPACITY_LIFETIMES)
            live = valid_logins(desk)
        kept = {name for name in live if fake.seen.sessions_opened[name] == 1}
        return {
            "logins": logins,
            "kept": len(kept),
            "first_valid_s": -1.0 if first_valid is None else first_valid,
            "penalties": sum(fake.seen.penalties.values()),
            "sessions": sum(fake.seen.sessions_opened.values()),
        }


def handover_run(
    redis_url: str, client: redis.Redis, workdir: Path, *, cluster: bool
) -> dict[str, float]:
    """10 addresses share 120 logins; the busiest is SIGKILLed, then rejoins."""
    with FakeTradovate(numbered_desk(LOGINS, 1), token_lifetime_s=HANDOVER_TOKEN_S) as fake:
        desk = Desk(fake, redis_url, client, workdir, cluster)
        logins = list(fake.users)
        with instances(desk, HANDOVER_ADDRESSES) as running:
            settled = seconds_until(
                lambda: (
                    shared_as_assigned(client, logins, HANDOVER_ADDRESSES)
                    and len(valid_logins(desk)) == LOGINS
                ),
                60,
            )
            sampler = TokenSampler(lambda: client, all_names(fake), fake.is_live).start()
            sessions_before = sum(fake.seen.sessions_opened.values())
            victim_pid = busiest_pid(client, logins)
            victim = next(p for p in running if p.pid == victim_pid)
            owned_by_victim = sum(pid == victim_pid for pid in owner_pids(client, logins).values())
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            taken = seconds_until(
                lambda: not {victim_pid, None} & set(owner_pids(client, logins).values()),
                60,
            )
            before = owner_pids(client, logins)
            running.append(desk.start(running.index(victim) + 1))
            rejoined = seconds_until(
                lambda: shared_as_assigned(client, logins, HANDOVER_ADDRESSES), 60
            )
            after = owner_pids(client, logins)
            samples = sampler.stop()
        return {
            "settled_s": -1.0 if settled is None else settled,
            "owned_by_victim": owned_by_victim,
            "taken_s": -1.0 if taken is None else taken,
            "rejoin_s": -1.0 if rejoined is None else rejoined,
            "moved": sum(before[login] != after[login] for login in logins),
            "new_sessions": sum(fake.seen.sessions_opened.values()) - sessions_before,
            "invalid": samples.stale + samples.missing + samples.unreadable,
            "samples": samples.taken,
        }


def bench_capacity(server: RedisServer, report: Callable[..., None], workdir: Path) -> None:
    rows = []
    ok = True
    limit = USABLE_RENEWALS * (TOKEN_MINUTES - FLOOR_MINUTES) / 60  # per group, 17.5
    for addresses, alone_s in [*((n, 0.0) for n in ADDRESS_COUNTS), (4, FIRST_ALONE_S)]:
        run = capacity_run(server, workdir, addresses, alone_s)
        per_group = run["kept"] / addresses
        ok = ok and run["penalties"] == 0 and run["sessions"] == run["logins"]
        ok = ok and abs(per_group - limit) <= 1 and run["first_valid_s"] >= 0
        rows.append(
            f"{addresses:>2} group(s), {run['logins']:.0f} logins"
            + (f", the first alone for {alone_s:.0f} s" if alone_s else "")
            + f": {run['kept']:.0f} kept alive "
            f"({per_group:.1f} per group; the arithmetic limit {limit:.1f}), penalty tickets "
            f"{run['penalties']:.0f}, every login valid {run['first_valid_s']:.1f} s after "
            f"start, {run['sessions']:.0f} sessions opened ({run['sessions'] - run['logins']:.0f} "
            "extra)"
        )
    report(
        f"6. scale out: {LOGINS_PER_GROUP} logins per budget group (its own /24), budgets "
        f"enforced, tokens live {CAPACITY_TOKEN_S:.0f} s (80 min; the hour is "
        f"{CAPACITY_TOKEN_S * 3600 / 4800:.0f} s), {CAPACITY_LIFETIMES:g} lifetimes",
        "\n    ".join(rows),
        f"{USABLE_RENEWALS} renewals an hour (a reserve of 1 under Tradovate's 15), renewed as "
        f"late as {FLOOR_MINUTES:.0f} min before expiry while short: {USABLE_RENEWALS} x "
        f"({TOKEN_MINUTES} - {FLOOR_MINUTES:.0f}) / 60 = {limit:.1f} logins per group; the rest "
        "lapse and stay out (when_budget_short = wait)",
        "0 penalty tickets, 0 extra sessions, kept alive per group within 1 of the limit",
        ok,
    )


def bench_handover(report: Callable[..., None], workdir: Path) -> None:
    rows, ok = [], True
    (workdir / "handover").mkdir(exist_ok=True)
    with RedisServer(workdir=workdir / "handover") as single:
        runs = [
            ("one Redis server", handover_run(single.url, single.client(), workdir, cluster=False))
        ]
    with redis_cluster(workdir / "cluster") as nodes:
        url = f"redis://127.0.0.1:{nodes[0].port}/0"
        client = build_client(load_redis_settings({"REDIS_URL": url, "REDIS_CLUSTER": "true"}))
        runs.append(("3-node Redis Cluster", handover_run(url, client, workdir, cluster=True)))
    for where, run in runs:
        ok = ok and run["new_sessions"] == 0 and run["invalid"] == 0
        ok = ok and 0 <= run["taken_s"] < 30 and run["rejoin_s"] >= 0
        rows.append(
            f"{where}: shared, every token valid, after {run['settled_s']:.1f} s; "
            "SIGKILL of the busiest "
            f"({run['owned_by_victim']:.0f} logins): owned again after {run['taken_s']:.1f} s; "
            f"its rejoin settled after {run['rejoin_s']:.1f} s, moving {run['moved']:.0f} logins; "
            f"new sessions {run['new_sessions']:.0f}, invalid samples {run['invalid']:.0f} "
            f"of {run['samples']:.0f}"
        )
    report(
        f"7. handover at scale: {LOGINS} logins on {HANDOVER_ADDRESSES} addresses, one killed "
        "and rejoining",
        "\n    ".join(rows),
        f"about {LOGINS // HANDOVER_ADDRESSES} logins move with one instance (1/N)",
        "owned again within 30 s, 0 new sessions, 0 invalid token samples",
        ok,
    )
