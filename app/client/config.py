"""Where the client finds the server: arguments, then ``HRA_URL``/``HRA_API_KEY``, then a TOML config file.

The config file is ``$HRA_CONFIG`` if set, else ``$XDG_CONFIG_HOME/hra/config.toml`` (``~/.config/hra/config.toml``):

    url = "https://hra.example.org"
    api_key = "hra_..."

It holds a secret: keep it readable by you alone (``chmod 600``). Unknown keys are an error, so that a typo
(``apikey``) is reported instead of surfacing later as a puzzling 401.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from app.client.errors import ConfigError

DEFAULT_URL = "http://127.0.0.1:8000"  # where `make run` / `hra run` listens
CONFIG_KEYS = frozenset({"url", "api_key", "timeout_s"})


@dataclass(frozen=True)
class ClientConfig:
    url: str
    api_key: str | None
    timeout_s: float = 120.0  # first transcriptions load the model; a CPU server may take a while
    source: str = "defaults"  # where the URL and key came from, for error messages


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("HRA_CONFIG"):
        return Path(env["HRA_CONFIG"]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "hra" / "config.toml"


def read_config_file(path: Path) -> dict[str, object]:
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the config file {path} is not valid TOML: {exc}") from exc
    unknown = sorted(set(values) - CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"unknown keys in {path}: {', '.join(unknown)} (known: {', '.join(sorted(CONFIG_KEYS))})")
    return values


def resolve_config(
    url: str | None = None,
    api_key: str | None = None,
    config_path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> ClientConfig:
    """Each setting from the first place that has it: the arguments, the environment, the config file.

    ``config_path`` given explicitly must exist; the default one is optional."""
    env = os.environ if env is None else env
    if config_path is not None:
        path = Path(config_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        file_values = read_config_file(path)
    else:
        path = default_config_path(env)
        file_values = read_config_file(path) if path.is_file() else {}

    sources = []

    def pick(argument: str | None, env_name: str, file_key: str) -> str | None:
        places = ((argument, "arguments"), (env.get(env_name), env_name), (file_values.get(file_key), str(path)))
        for value, where in places:
            if value:
                sources.append(where)
                return str(value)
        return None

    resolved_url = pick(url, "HRA_URL", "url") or DEFAULT_URL
    resolved_key = pick(api_key, "HRA_API_KEY", "api_key")
    timeout = file_values.get("timeout_s", ClientConfig.timeout_s)
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(f"timeout_s in {path} must be a positive number of seconds")
    return ClientConfig(
        url=resolved_url.rstrip("/"),
        api_key=resolved_key,
        timeout_s=float(timeout),
        source=", ".join(dict.fromkeys(sources)) or "defaults",
    )
