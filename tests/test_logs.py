from __future__ import annotations

import io
import json
import logging
import threading
import warnings

import structlog

from daemon.logs import configure_logging, fingerprint, register_secrets, scrub
from tests.helpers import make_jwt


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_line_is_json_including_library_records() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    structlog.get_logger("daemon.test").info("token.refreshed", login="APEX_1", ttl=5)
    logging.getLogger("apscheduler.scheduler").warning("Execution of job %s skipped", "x")
    logging.getLogger("redis.connection").error("socket closed")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("httpx").exception("request failed")
    lines = json_lines(stream)
    assert [line["event"] for line in lines[:3]] == [
        "token.refreshed",
        "Execution of job x skipped",
        "socket closed",
    ]
    assert lines[0]["login"] == "APEX_1"
    assert lines[0]["level"] == "info"
    assert lines[1]["logger"] == "apscheduler.scheduler"
    assert "timestamp" in lines[1]
    assert "deprecated thing" in str(lines[3]["event"])
    assert "RuntimeError: boom" in str(lines[4]["exception"])


def test_uncaught_thread_exception_is_one_json_line() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)

    def crash() -> None:
        raise ValueError("thread fell over")

    thread = threading.Thread(target=crash, name="worker-1")
    thread.start()
    thread.join()
    (line,) = json_lines(stream)
    assert line["event"] == "thread.crashed"
    assert line["thread"] == "worker-1"
    assert "thread fell over" in str(line["exception"])


def test_noisy_libraries_are_quiet_at_info() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    logging.getLogger("httpx").info("HTTP Request: POST https://x")
    logging.getLogger("apscheduler.executors.default").info('Running job "x"')
    assert stream.getvalue() == ""
    configure_logging("json", "debug", stream=stream)
    logging.getLogger("httpx").debug("HTTP Request: POST https://x")
    assert "HTTP Request" in stream.getvalue()


def test_secrets_and_tokens_are_scrubbed_everywhere() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    register_secrets("hunter2-Password", "the-sec-value")
    token = make_jwt(2_000_000_000)
    log = structlog.get_logger("daemon.test")
    log.info("leak.attempt", detail=f"password=hunter2-Password sec=the-sec-value t={token}")
    log.info("nested", values=["hunter2-Password", {"k": token}])
    logging.getLogger("httpx").warning("Authorization: Bearer %s", token)
    try:
        raise RuntimeError(f"failed with hunter2-Password and {token}")
    except RuntimeError:
        log.exception("with.traceback")
    text = stream.getvalue()
    assert "hunter2-Password" not in text
    assert "the-sec-value" not in text
    assert token not in text
    assert f"<token {fingerprint(token)}>" in text
    assert text.count("<redacted>") >= 4


def test_scrub_prefers_the_longest_secret() -> None:
    register_secrets("abc", "abcdef")
    assert scrub("x abcdef y") == "x <redacted> y"


def test_console_format_is_readable() -> None:
    stream = io.StringIO()
    configure_logging("console", "info", stream=stream)
    structlog.get_logger("daemon.test").warning("redis.down", redis="redis://h:1/0")
    text = stream.getvalue()
    assert "redis.down" in text
    assert "redis=redis://h:1/0" in text
    assert not text.lstrip().startswith("{")


def test_auto_is_json_when_not_a_terminal() -> None:
    stream = io.StringIO()
    configure_logging("auto", "info", stream=stream)
    structlog.get_logger().info("daemon.ready")
    assert json_lines(stream)[0]["event"] == "daemon.ready"


def test_redaction_cannot_be_dodged_by_escaping_encoding_or_case() -> None:
    password = 'Pa"ss\\word-1'
    webhook = "http://localhost:9/hooks/T0KEN-abc"
    register_secrets(password, webhook)
    echoed = '{"errorText": "bad password Pa\\"ss\\\\word-1"}'  # JSON-escaped in an errorText
    assert password not in scrub(echoed)
    assert 'Pa\\"ss\\\\word-1' not in scrub(echoed)
    assert "Pa%22ss%5Cword-1" not in scrub("body=Pa%22ss%5Cword-1")  # URL-encoded
    assert "LOCALHOST:9/HOOKS" not in scrub("posting to HTTP://LOCALHOST:9/HOOKS/T0KEN-ABC")
    assert scrub("posting to HTTP://LOCALHOST:9/HOOKS/T0KEN-ABC").count("<redacted>") == 1


def test_short_secrets_never_bite_inside_ordinary_words() -> None:
    register_secrets("a", "pw1")
    assert scrub("APEX_266668 renewed a token") == "APEX_266668 renewed a token"
    assert scrub("pw1") == "<redacted>"  # a value that is exactly the secret still goes
