"""Whatever Tradovate answers, a refresh never raises and never stores a malformed token."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import fakeredis
import httpx
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.metrics import Metrics
from daemon.refresh.build import build_refreshing
from daemon.sim.tradovate import FakeTradovate
from daemon.store.status import LoginStatus
from daemon.store.tokens import token_state
from daemon.token_format import token_problem
from daemon.tradovate import TradovateClient
from tests.helpers import make_jwt, settings_for, user

FAKE = FakeTradovate([user("APEX_1", accounts=1)])
SETTINGS = settings_for(FAKE, ORCA_AUTH_RATE_LIMIT="1000000")
CLIENT = TradovateClient(SETTINGS.tradovate)  # one for every example: respx patches its transport

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
token_like = st.one_of(
    st.text(max_size=40),
    st.builds(lambda exp: make_jwt(exp), st.floats(min_value=0, max_value=4e9)),
    st.just(""),
    st.just("a.b.c"),
)
tradovate_like = st.fixed_dictionaries(
    {},
    optional={
        "accessToken": token_like,
        "mdAccessToken": token_like,
        "expirationTime": st.one_of(st.text(max_size=30), st.integers(), st.floats()),
        "errorText": st.text(max_size=20),
        "p-ticket": st.text(max_size=10),
        "p-time": st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5)),
        "p-captcha": st.booleans(),
        "userId": json_values,
        "userStatus": st.sampled_from(
            ["Active", "Closed", "Initiated", "TemporaryLocked", "UnconfirmedEmail", "?"]
        ),
        "passwordExpirationTime": st.one_of(st.text(max_size=30), st.integers(), st.floats()),
        "hibpHint": json_values,
    },
)
bodies = st.one_of(
    tradovate_like.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=60),
)
# Tradovate's documented statuses too (partner docs, "Error Handling").
answers = st.tuples(
    st.sampled_from([200, 200, 200, 400, 401, 403, 404, 423, 429, 500, 503]), bodies
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(answers, min_size=1, max_size=6))
def test_refresh_never_raises_and_never_stores_a_bad_token(
    script: list[tuple[int, bytes]],
) -> None:
    store = fakeredis.FakeRedis(decode_responses=True)
    responses = iter(script)

    def respond(request: httpx.Request) -> httpx.Response:
        status, body = next(responses, (503, b""))
        return httpx.Response(status, content=body)

    with respx.mock(base_url=FAKE.base_url, assert_all_called=False) as router:
        router.route().mock(side_effect=respond)
        refresher = build_refreshing(
            SETTINGS,
            CLIENT,
            store,
            metrics=Metrics(),
            instance="prop",
            rng=random.Random(0),
        ).refresher
        for _ in range(3):
            attempt = refresher.refresh("APEX_1", force=True)
            assert attempt.delay_s > 0
    now = time.time()
    status = LoginStatus.parse(store.get("orca:status:APEX_1"))
    for key in store.keys("token:*"):
        value: Any = store.get(key)
        assert status is not None
        assert token_state(value, status.expiry_of(value), now).usable, (key, value)
        assert store.ttl(key) > 0
    for key in store.keys("mdtoken:*"):
        assert token_problem(store.get(key)) is None
        assert store.ttl(key) > 0
