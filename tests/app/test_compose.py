"""docker-compose.yml takes its secrets from a .env it refuses to start without, ships no known default, publishes
only the API, and what it gives the service passes the service's own production checks.

Compose's interpolation (``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}``, ``$$``) is applied here by a small
re-implementation, so the test needs no Docker; where a compose client is installed (``docker-compose`` or the
``docker compose`` plugin: no engine needed for ``config``) it is run as well.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from app.settings import KNOWN_DEFAULT_SECRETS, Settings, url_password

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
EXAMPLE = REPO / ".env.example"
REQUIRED = {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}
FILLED = {
    "POSTGRES_PASSWORD": "3f9c1e0b7a2d4c6e8f1a3b5c7d9e0f2a4b6c8d0e1f2a3b4c",
    "REDIS_PASSWORD": "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f",
    "MINIO_ROOT_USER": "hra-admin-7c2e",
    "MINIO_ROOT_PASSWORD": "5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d",
}
REFERENCE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|:\?|-|\?)(?P<arg>[^}]*))?\}")


class Refused(Exception):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        value = env.get(name)
        if op == ":?" and not value or op == "?" and value is None:
            raise Refused(f"{name}: {arg}")
        if op == ":-" and not value or op == "-" and value is None:
            return arg
        return value or ""

    return REFERENCE.sub(one, text)


def parse_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def rendered(env: dict[str, str]) -> dict:
    return yaml.safe_load(interpolate(COMPOSE.read_text(), env))


def references() -> dict[str, set[str]]:
    """Each variable the file uses, with the operators it is used with ("" for a plain ``${VAR}``)."""
    found: dict[str, set[str]] = {}
    for match in REFERENCE.finditer(COMPOSE.read_text()):
        if match.group("name"):
            found.setdefault(match.group("name"), set()).add(match.group("op") or "")
    return found


def test_every_secret_is_required_and_has_no_default():
    uses = references()
    assert REQUIRED <= set(uses)
    for name in REQUIRED:
        assert uses[name] == {":?"}, f"{name} must always be ${{{name}:?...}}, not {uses[name]}"
    text = COMPOSE.read_text()
    assert not [old for old in ("hra-local-password", "hra-local-secret", "minioadmin") if old in text]
    secrets = [
        str(value) if not str(value).count("://") else (url_password(str(value)) or "")
        for service in rendered(FILLED)["services"].values()
        for name, value in (service.get("environment") or {}).items()
        if re.search(r"PASSWORD|SECRET|AUTH|_KEY|_URL", name)
    ]
    assert len(secrets) > 10
    assert not [v for v in secrets if v.lower() in KNOWN_DEFAULT_SECRETS]


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_compose_refuses_to_start_without_each_secret(missing):
    with pytest.raises(Refused, match=missing):
        rendered({k: v for k, v in FILLED.items() if k != missing})


def test_the_example_env_documents_every_variable_and_fills_in_no_secret():
    example = parse_env_file(EXAMPLE)
    assert REQUIRED <= set(example)
    assert all(example[name] == "" for name in REQUIRED | {"HRA_BOOTSTRAP_API_KEY"})
    with pytest.raises(Refused):
        rendered(example)  # copied unedited, it does not start


def test_only_the_api_is_published_and_the_minio_console_is_not():
    services = rendered(FILLED)["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"api"}
    assert "9001" not in str(services["minio"].get("ports", ""))


def test_what_compose_gives_the_service_passes_its_production_checks(monkeypatch):
    services = rendered(FILLED)["services"]
    environment = services["api"]["environment"]
    assert environment["HRA_ENV"] == "production"
    for name in list(environment):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, "" if value is None else str(value))
    settings = Settings(_env_file=None)
    assert settings.env == "production" and settings.database_url.startswith("postgresql")
    assert FILLED["REDIS_PASSWORD"] in settings.broker_url
    for worker in ("worker-train", "worker-eval", "migrate"):
        assert services[worker]["environment"]["HRA_DATABASE_URL"] == environment["HRA_DATABASE_URL"]
    # The old defaults, were they set in .env, are refused by the service itself.
    monkeypatch.setenv("HRA_DATABASE_URL", environment["HRA_DATABASE_URL"].replace(FILLED["POSTGRES_PASSWORD"], "hra-local-password"))
    with pytest.raises(ValueError, match="HRA_DATABASE_URL"):
        Settings(_env_file=None)


def compose_client() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


def test_a_compose_client_agrees_where_one_is_installed(tmp_path):
    client = compose_client()
    if client is None:  # the structural checks above stand alone
        return
    good, empty = tmp_path / "good.env", tmp_path / "empty.env"
    good.write_text("".join(f"{k}={v}\n" for k, v in FILLED.items()))
    empty.write_text("")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    ok = subprocess.run([*client, "--env-file", str(good), "-f", str(COMPOSE), "config"], capture_output=True,
                        text=True, env=env, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run([*client, "--env-file", str(empty), "-f", str(COMPOSE), "config"], capture_output=True,
                             text=True, env=env, cwd=tmp_path)
    assert refused.returncode != 0 and "in .env" in refused.stderr
