"""The logins: named by ORCA_ACCOUNTS (passwords in TRADOVATE_PASSWORD_<NAME>) or listed in the
accounts file (TOML `[[accounts]]`, passwords never in it)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

from daemon.config.model import LOGIN_ROUTES, WHEN_BUDGET_SHORT, Login
from daemon.config.reader import EnvReader
from daemon.config.secret import Secret
from daemon.registry import setting

LOGIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")


def password_variable(login_name: str) -> str:
    """TRADOVATE_PASSWORD_<NAME>, the password variable of a login listed in ORCA_ACCOUNTS."""
    return "TRADOVATE_PASSWORD_" + re.sub(r"[^A-Za-z0-9]", "_", login_name).upper()


def read_logins(reader: EnvReader, *, credentials: bool) -> tuple[Login, ...]:
    listed = reader.text("ORCA_ACCOUNTS")
    if listed is not None:
        names = [name.strip() for name in listed.split(",") if name.strip()]
        route = reader.choice("TRADOVATE_LOGIN", LOGIN_ROUTES)
        entries = [(n, {"password_env": password_variable(n), "route": route}) for n in names]
        source = "ORCA_ACCOUNTS"
    else:
        explicit = reader.given("ORCA_ACCOUNTS_FILE")
        path = Path(explicit or str(setting("ORCA_ACCOUNTS_FILE").default))
        if not path.is_file():
            if credentials or explicit:
                reader.problem(
                    "ORCA_ACCOUNTS_FILE", f"{path} does not exist (or set ORCA_ACCOUNTS)"
                )
            return ()
        source = str(path)
        entries = _accounts_file_entries(reader, path)

    logins: list[Login] = []
    seen: set[str] = set()
    for name, entry in entries:
        if not LOGIN_NAME.match(name):
            reader.problem(source, f"login name {name!r} is not a Tradovate user name")
            continue
        if name in seen:
            reader.problem(source, f"login {name} is listed twice")
            continue
        seen.add(name)
        password = _login_password(reader, name, entry) if credentials else None
        choice = entry.get("when_budget_short", WHEN_BUDGET_SHORT[0])
        route = entry.get("route", reader.choice("TRADOVATE_LOGIN", LOGIN_ROUTES))
        logins.append(Login(name, password, when_budget_short=choice, route=route))
    if credentials and not logins and not reader.problems:
        reader.problem(source, "lists no logins")
    return tuple(logins)


def _accounts_file_entries(reader: EnvReader, path: Path) -> list[tuple[str, dict[str, str]]]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        reader.problem("ORCA_ACCOUNTS_FILE", f"cannot read {path}: {exc}")
        return []
    except tomllib.TOMLDecodeError as exc:
        reader.problem("ORCA_ACCOUNTS_FILE", f"{path} is not valid TOML: {exc}")
        return []
    accounts = document.get("accounts")
    if not isinstance(accounts, list) or not all(isinstance(a, dict) for a in accounts):
        reader.problem("ORCA_ACCOUNTS_FILE", f"{path} needs [[accounts]] tables")
        return []
    entries = []
    for number, account in enumerate(accounts, start=1):
        where = f"{path} [[accounts]] #{number}"
        known = {"name", "password_env", "password_file", "when_budget_short", "login"}
        unknown = set(account) - known
        if unknown:
            reader.problem(where, f"unknown keys {', '.join(sorted(unknown))}")
        if "password" in account:
            reader.problem(
                where, "passwords never live in this file: use password_env or password_file"
            )
        name = account.get("name")
        if not isinstance(name, str) or not name.strip():
            reader.problem(where, "needs a name")
            continue
        sources = {k: v for k, v in account.items() if k in ("password_env", "password_file")}
        if len(sources) != 1 or not all(isinstance(v, str) and v for v in sources.values()):
            reader.problem(where, f"{name} needs exactly one of password_env or password_file")
            continue
        choice = account.get("when_budget_short", WHEN_BUDGET_SHORT[0])
        if choice not in WHEN_BUDGET_SHORT:
            reader.problem(
                where, f"when_budget_short must be one of {', '.join(WHEN_BUDGET_SHORT)}"
            )
            continue
        route = account.get("login", reader.choice("TRADOVATE_LOGIN", LOGIN_ROUTES))
        if route not in LOGIN_ROUTES:
            reader.problem(where, f"login must be one of {', '.join(LOGIN_ROUTES)}")
            continue
        sources = {k: str(v) for k, v in sources.items()}
        entries.append((name.strip(), {**sources, "when_budget_short": choice, "route": route}))
    return entries


def _login_password(reader: EnvReader, name: str, entry: Mapping[str, str]) -> Secret | None:
    if "password_file" in entry:
        return reader.secret_file(f"password_file of {name}", entry["password_file"])
    return reader.secret(entry["password_env"], required=True)
