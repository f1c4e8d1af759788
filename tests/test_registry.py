"""One registry of settings: the code reads only registered variables, every registered one is
read, docs/configuration.md's table is the registry's, and typos are caught with the closest
name."""

from __future__ import annotations

import re
from pathlib import Path

from daemon.registry import SETTINGS, markdown_table, unknown_variables

ROOT = Path(__file__).parent.parent


def test_the_configuration_page_s_table_is_the_registry() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert markdown_table() in page


def test_every_registered_variable_is_read_by_the_code() -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "daemon").rglob("*.py"))
    source = source.replace((ROOT / "daemon" / "registry.py").read_text(encoding="utf-8"), "")
    launcher = (ROOT / "deploy" / "orca-tokens-nohup.sh").read_text(encoding="utf-8")
    unread = [
        s.name
        for s in SETTINGS
        if "<" not in s.name
        and not (
            re.search(rf'"{re.escape(s.name)}"', source)
            if s.reader == "daemon"
            else re.search(rf"\b{re.escape(s.name)}=\$\{{{re.escape(s.name)}:-", launcher)
        )
    ]
    assert unread == []


def test_a_typo_is_flagged_with_the_closest_known_name() -> None:
    env = {
        "REDIS_PASWORD": "x",
        "ORCA_REFRESH_INTERVALL": "60",
        "TRADOVATE_PASSWORD_APEX_1": "x",  # a login's password: known by its pattern
        "TRADOVATE_SEC_FILE": "sec",  # a secret read from a file: known
        "ORCA_ZZZ": "1",
        "HOME": "/root",  # not ours: never flagged
    }
    assert unknown_variables(env) == [
        ("ORCA_REFRESH_INTERVALL", "ORCA_REFRESH_INTERVAL"),
        ("ORCA_ZZZ", None),
        ("REDIS_PASWORD", "REDIS_PASSWORD"),
    ]
