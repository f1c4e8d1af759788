"""python -m daemon.sim.tradovate: serve a numbered desk on 127.0.0.1 until killed."""

from __future__ import annotations

import threading

from daemon.sim.tradovate.desks import numbered_desk
from daemon.sim.tradovate.simulator import FakeTradovate


def main(argv: list[str] | None = None) -> None:
    """python -m daemon.sim.tradovate: serve a numbered desk on 127.0.0.1 until killed."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m daemon.sim.tradovate")
    parser.add_argument("--logins", type=int, default=4)
    parser.add_argument("--accounts", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--lifetime", type=float, default=4_800.0, help="token seconds")
    parser.add_argument(
        "--no-budgets", action="store_true", help="no per-address budgets (throughput runs)"
    )
    args = parser.parse_args(argv)
    fake = FakeTradovate(
        numbered_desk(args.logins, args.accounts),
        latency_s=args.latency,
        token_lifetime_s=args.lifetime,
        address_budgets=not args.no_budgets,
    ).start()
    print(fake.base_url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
