"""Where settings come from: the process environment over a `.env` file (ORCA_ENV_FILE names
another file); the environment wins."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values


def read_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment over the `.env` file (ORCA_ENV_FILE names another file)."""
    return read_environment_with_sources(environ)[0]


def read_environment_with_sources(
    environ: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """(`read_environment`, where each value came from: "environment" or the env file)."""
    environ = os.environ if environ is None else environ
    env_file = environ.get("ORCA_ENV_FILE")
    path = Path(env_file) if env_file else Path(".env")
    merged: dict[str, str] = {}
    sources: dict[str, str] = {}
    if path.is_file():  # a missing ORCA_ENV_FILE is reported by load_settings with the rest
        from_file = {k: v for k, v in dotenv_values(path).items() if v is not None}
        merged.update(from_file)
        sources.update(dict.fromkeys(from_file, str(path)))
    merged.update(environ)
    sources.update(dict.fromkeys(environ, "environment"))
    return merged, sources
