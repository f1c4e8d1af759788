"""Typed values read from an environment mapping, each problem collected instead of raised, every
default taken from the registry; secrets from `NAME` or the file `NAME_FILE` names."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from daemon.config.secret import Secret
from daemon.registry import setting


class EnvReader:
    """Reads typed values from an environment mapping, collecting problems instead of raising."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []
        self.credentials_dir = env.get("CREDENTIALS_DIRECTORY") or None
        self.files_read: list[str] = []  # credential files, for the checks of their modes

    def problem(self, name: str, message: str) -> None:
        self.problems.append(f"{name}: {message}")

    def text(self, name: str) -> str | None:
        """The value, stripped, or the registered default (None when it has none)."""
        default = setting(name).default
        value = self.env.get(name, "").strip()
        return value or (str(default) if default is not None else None)

    def string(self, name: str) -> str:
        """The value, stripped, or the registered default of a setting that has one."""
        default = setting(name).default
        if default is None:
            raise KeyError(f"{name} has no registered default")
        return self.env.get(name, "").strip() or str(default)

    def given(self, name: str) -> str | None:
        """The value as set (stripped), None when unset or empty: no default."""
        setting(name)  # every variable read is registered
        return self.env.get(name, "").strip() or None

    def integer(self, name: str, *, low: int, high: int) -> int:
        default = int(setting(name).default or 0)
        raw = self.given(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            self.problem(name, f"{raw!r} is not an integer")
            return default
        if not low <= value <= high:
            self.problem(name, f"{value} is out of range (must be between {low} and {high})")
            return default
        return value

    def number(self, name: str, *, low: float, high: float) -> float:
        default = float(setting(name).default or 0.0)
        raw = self.given(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            self.problem(name, f"{raw!r} is not a number")
            return default
        if not low <= value <= high:  # NaN and infinities fail here too
            self.problem(name, f"{raw} is out of range (must be between {low:g} and {high:g})")
            return default
        return value

    def boolean(self, name: str) -> bool:
        default = bool(setting(name).default)
        raw = self.given(name)
        if raw is None:
            return default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        self.problem(name, f"{raw!r} is not a boolean (use true or false)")
        return default

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        default = str(setting(name).default)
        raw = self.given(name)
        if raw is None:
            return default
        if raw.lower() not in choices:
            self.problem(name, f"{raw!r} is not one of {', '.join(choices)}")
            return default
        return raw.lower()

    def secret_file(self, name: str, path_text: str) -> Secret | None:
        path = self._credential_path(path_text)
        self.files_read.append(str(path))
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            self.problem(name, f"cannot read {path}: {exc.strerror or exc}")
            return None
        if not value:
            self.problem(name, f"{path} is empty")
            return None
        return Secret(value)

    def secret_path(self, name: str) -> str | None:
        """The file `NAME_FILE` names, resolved as `secret_file` reads it (None: unset)."""
        file_name = self.env.get(f"{name}_FILE", "").strip() or None
        return None if file_name is None else str(self._credential_path(file_name))

    def _credential_path(self, path_text: str) -> Path:
        """Relative to $CREDENTIALS_DIRECTORY when that is set (systemd's LoadCredential=)."""
        path = Path(path_text)
        if not path.is_absolute() and self.credentials_dir:
            path = Path(self.credentials_dir) / path
        return path

    def secret(self, name: str, *, required: bool) -> Secret | None:
        """`NAME`, or the file named by `NAME_FILE`. The value itself is never quoted."""
        value = self.env.get(name, "").strip()
        file_name = self.env.get(f"{name}_FILE", "").strip() or None
        if value and file_name:
            self.problem(name, f"set either {name} or {name}_FILE, not both")
            return None
        if file_name:
            return self.secret_file(f"{name}_FILE", file_name)
        if value:
            return Secret(value)
        if required:
            self.problem(name, "is not set")
        return None
