from __future__ import annotations

import time
from typing import Any

import fakeredis
import pytest

from daemon.store.status import LoginStatus
from daemon.store.tokens import (
    InvalidTokenError,
    TokenSet,
    fingerprint,
    key_ttl_s,
    token_state,
    write_login_tokens,
)
from daemon.token_format import jwt_expiry
from tests.helpers import make_jwt

NOW = 1_900_000_000.0


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc.def",  # two parts
        "a.b.c.d",  # four parts
        "eyJh.!!!.sig",  # not base64url
        "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.sig",  # payload is not JSON
        "eyJhbGciOiJIUzI1NiJ9.WzFd.sig",  # payload is a list
        make_jwt(NOW + 60).rsplit(".", 1)[0] + ".",  # empty signature
        None,
        42,
    ],
)
def test_malformed_jwts_have_no_jwt_expiry(token: object) -> None:
    assert jwt_expiry(token) is None
    assert token_state(token, None, NOW) in ("missing", "invalid")


def test_exp_must_be_a_number() -> None:
    assert (
        jwt_expiry(make_jwt(NOW).replace(make_jwt(NOW).split(".")[1], "eyJleHAiOnRydWV9")) is None
    )
    assert jwt_expiry(make_jwt(NOW + 60)) == NOW + 60


def test_token_state_from_the_recorded_expiry() -> None:
    opaque = "Xk3q-opaque_token.value~1"
    assert token_state(None, None, NOW) == "missing"
    assert token_state(opaque, NOW + 3_600, NOW) == "valid"
    assert token_state(opaque, NOW + 60, NOW) == "expiring"
    assert token_state(opaque, NOW - 1, NOW) == "invalid"
    assert token_state(opaque, None, NOW) == "invalid"  # nothing says when it dies
    # The record wins over what a JWT claims; without a record the JWT's exp is the fallback.
    assert token_state(make_jwt(NOW + 3_600), NOW - 1, NOW) == "invalid"
    assert token_state(make_jwt(NOW - 1), None, NOW) == "invalid"
    assert token_state(make_jwt(NOW + 3_600), None, NOW) == "valid"


@pytest.mark.parametrize("value", ["", " tok", "to\nk", "tok\x00", "x" * 8_193])
def test_values_that_cannot_be_tokens_are_invalid_whatever_is_recorded(value: str) -> None:
    assert token_state(value, NOW + 3_600, NOW) == "invalid"


def test_fingerprint_is_8_hex_digits_of_sha256() -> None:
    assert fingerprint("abc") == "ba7816bf"


@pytest.mark.parametrize(
    ("remaining", "lifetime", "max_ttl", "expected"),
    [
        (5_400, 5_400, 18_000, 5_340),  # 90 min token: 60 s margin
        (5_400, 5_400, 600, 600),  # ORCA_TOKEN_TTL caps it
        (30, 30, 18_000, 27),  # 30 s token: a tenth of its lifetime
        (20, 30, 18_000, 17),  # later in its life, the same margin
        (2, 30, 18_000, -1),  # too late: no key worth writing
    ],
)
def test_key_ttl(remaining: float, lifetime: float, max_ttl: int, expected: int) -> None:
    assert key_ttl_s(NOW + remaining, lifetime, NOW, max_ttl) == expected


def token_set(expires_in: float = 5_400, **extra: object) -> TokenSet:
    now = time.time()
    fields: dict[str, object] = {
        "login": "APEX_1",
        "access_token": make_jwt(now + expires_in, sub="APEX_1"),
        "md_access_token": make_jwt(now + expires_in, use="md"),
        "expires_at": now + expires_in,
        "lifetime_s": expires_in,
        "accounts": ("ACC_1", "ACC_2", "APEX_1"),
    }
    fields.update(extra)
    return TokenSet(**fields)  # type: ignore[arg-type]  # fields checked by TokenSet itself


def test_writes_every_name_with_a_clamped_ttl_and_status() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    tokens = token_set()
    ttl = write_login_tokens(
        client, tokens, now=time.time(), max_ttl_s=18_000, status=LoginStatus("APEX_1")
    )
    assert 5_338 <= ttl <= 5_340
    for name in ("APEX_1", "ACC_1", "ACC_2"):
        assert client.get(f"token:{name}") == tokens.access_token
        assert client.get(f"mdtoken:{name}") == tokens.md_access_token
        assert 0 < client.ttl(f"token:{name}") <= ttl
    assert LoginStatus.parse(client.get("orca:status:APEX_1")) == LoginStatus("APEX_1")
    assert len(client.keys("token:*")) == 3  # the login is not written twice


def test_an_md_token_that_cannot_be_a_token_gives_way_to_the_access_token() -> None:
    """mdtoken:* always holds a token the market-data socket accepts: the access token itself
    when the md token is unusable (or too close to its own expiry for a key)."""
    client = fakeredis.FakeRedis(decode_responses=True)
    now = time.time()
    for md in ("bad\nmd", make_jwt(now + 30)):
        tokens = token_set(md_access_token=md)
        write_login_tokens(client, tokens, now=now, max_ttl_s=18_000)
        assert client.get("mdtoken:APEX_1") == tokens.access_token
        assert client.ttl("mdtoken:APEX_1") == client.ttl("token:APEX_1")


def test_md_token_that_expires_sooner_gets_its_own_ttl() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    now = time.time()
    tokens = token_set(md_access_token=make_jwt(now + 600))
    write_login_tokens(client, tokens, now=now, max_ttl_s=18_000)
    assert client.ttl("mdtoken:APEX_1") <= 540 < client.ttl("token:APEX_1")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"access_token": ""}, "not a token: empty"),
        ({"access_token": "abc def"}, "not a token: contains whitespace"),
        ({"access_token": "x" * 8_193}, "not a token: longer than 8192"),
        ({"expires_at": 1_000.0}, "has expired"),
    ],
)
def test_never_writes_a_bad_token(changes: dict[str, Any], message: str) -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    client.set("token:APEX_1", "the-last-good-one")
    with pytest.raises(InvalidTokenError, match=message):
        write_login_tokens(client, token_set(**changes), now=time.time(), max_ttl_s=18_000)
    assert client.get("token:APEX_1") == "the-last-good-one"
    assert client.keys("mdtoken:*") == []


def nearly_expired() -> TokenSet:
    """expirationTime (the truth) 0.9 s away, though the JWT's own exp is later."""
    now = time.time()
    return token_set(expires_at=now + 0.9, md_access_token=None, lifetime_s=30.0)


def test_too_little_life_left_is_refused() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    with pytest.raises(InvalidTokenError, match="too little life"):
        write_login_tokens(client, nearly_expired(), now=time.time(), max_ttl_s=18_000)
    assert client.keys("*") == []


def test_error_messages_name_tokens_by_fingerprint_only() -> None:
    tokens = nearly_expired()
    with pytest.raises(InvalidTokenError) as caught:
        write_login_tokens(fakeredis.FakeRedis(), tokens, now=time.time(), max_ttl_s=18_000)
    assert tokens.access_token not in str(caught.value)
    assert fingerprint(tokens.access_token) in str(caught.value)
    assert tokens.access_token not in repr(tokens)


def test_read_api_follows_the_reference() -> None:
    from daemon.store.tokens import (
        delete_token,
        get_md_token,
        get_token,
        iter_tokens,
        token_exists,
        token_ttl,
    )

    client = fakeredis.FakeRedis(decode_responses=True)
    write_login_tokens(client, token_set(), now=time.time(), max_ttl_s=18_000)
    client.set("token:LEGACY", "not-a-jwt")  # an old writer's value: listed, flagged invalid
    token = get_token("APEX_1", client=client)
    assert token is not None
    assert get_token("ACC_1", client=client) == token
    assert get_md_token("APEX_1", client=client) is not None
    assert get_token("NOPE", client=client) is None
    assert 5_000 < token_ttl("APEX_1", client=client) <= 5_340
    assert token_ttl("NOPE", client=client) == -2
    client.set("token:FOREVER", make_jwt(time.time() + 60))
    assert token_ttl("FOREVER", client=client) == -1
    assert token_exists("APEX_1", client=client)
    listed = {t.name: t for t in iter_tokens(client=client, batch=2)}
    assert set(listed) == {"APEX_1", "ACC_1", "ACC_2", "LEGACY", "FOREVER"}
    assert listed["APEX_1"].fingerprint == fingerprint(token)
    assert listed["LEGACY"].state == "invalid"
    assert token not in repr(listed)
    assert delete_token("APEX_1", client=client)
    assert not token_exists("APEX_1", client=client)
    assert get_md_token("APEX_1", client=client) is None
    assert not delete_token("APEX_1", client=client)


def test_read_api_uses_the_shared_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon.store import client as redis_client
    from daemon.store.tokens import get_token

    shared = fakeredis.FakeRedis(decode_responses=True)
    shared.set("token:APEX_1", "t")
    monkeypatch.setattr(redis_client, "_client", shared)
    assert get_token("APEX_1") == "t"


def test_a_token_a_bearer_header_cannot_carry_is_refused() -> None:
    from daemon.token_format import token_problem

    assert (
        token_problem("\u00d7\ud8ce\udcd4_")
        == "contains whitespace, control or non-ASCII characters"
    )
    assert token_problem("ascii.only-token_~") is None
