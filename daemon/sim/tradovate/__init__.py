"""A small simulated Tradovate on 127.0.0.1, for the demo, end-to-end tests, chaos runs and
benchmarks. It keeps Tradovate's rules that matter to the daemon (`rules`, `simulator`): a login
(`signin`) opens a session and a user keeps only two (`sessions`: a third closes the oldest,
killing its tokens); renewal stays in the session; each client /24 has its budgets (`limits`);
tokens carry a real `exp` (`tokens`); faults of every kind can be injected per endpoint
(`faults`); it serves over HTTP (`http`) desks of any size (`desks`) and keeps what it saw
(`observations`).
"""

from daemon.sim.tradovate.desks import REFERENCE_DESK, FakeUser, numbered_desk, reference_desk
from daemon.sim.tradovate.faults import FAULT_KINDS, RECOVERABLE_FAULTS, Fault, Hang, Reset
from daemon.sim.tradovate.http import QuietHTTPServer
from daemon.sim.tradovate.observations import Observations
from daemon.sim.tradovate.rules import (
    ACCOUNTS_PATH,
    AUTHORIZE_PATH,
    BUDGET_WINDOW_S,
    DEMO_SEC,
    LOGIN_FAILURE_BUDGET,
    LOGIN_PATH,
    PENALTY_S,
    REAL_TOKEN_LIFETIME_S,
    RENEW_BUDGET,
    RENEW_PATH,
    TV_ACCOUNTS_PATH,
)
from daemon.sim.tradovate.simulator import FakeTradovate

__all__ = [
    "ACCOUNTS_PATH",
    "AUTHORIZE_PATH",
    "BUDGET_WINDOW_S",
    "DEMO_SEC",
    "FAULT_KINDS",
    "LOGIN_FAILURE_BUDGET",
    "LOGIN_PATH",
    "PENALTY_S",
    "REAL_TOKEN_LIFETIME_S",
    "RECOVERABLE_FAULTS",
    "REFERENCE_DESK",
    "RENEW_BUDGET",
    "RENEW_PATH",
    "TV_ACCOUNTS_PATH",
    "FakeTradovate",
    "FakeUser",
    "Fault",
    "Hang",
    "Observations",
    "QuietHTTPServer",
    "Reset",
    "numbered_desk",
    "reference_desk",
]
