"""docker-compose.yml must run the engine's real commands with real settings, in a safe order.

Checked by reading the file, so no Docker engine is needed; `docker compose config` is an extra
check where the compose plugin is installed.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from slotengine.cli import build_parser
from slotengine.config import Settings

ROOT = Path(__file__).parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

# Services built from our image, and the `slotengine` subcommand each must run.
SUBCOMMANDS = {"migrate": "migrate", "api": "serve", "worker": "worker", "scheduler": "scheduler"}
LONG_RUNNING = ["postgres", "redis", "api", "worker", "scheduler"]
ENGINE = ["api", "worker", "scheduler"]

ENV_PREFIX = Settings.model_config.get("env_prefix", "")
SETTING_VARIABLES = {f"{ENV_PREFIX}{name}".upper(): name for name in Settings.model_fields}
_VARIABLE = re.compile(rf"\b{ENV_PREFIX}[A-Z0-9_]+")
_DEFAULTED = re.compile(r"\$\{[A-Za-z0-9_]+:?-([^}]*)\}")
_REQUIRED = re.compile(r"\$\{[A-Za-z0-9_]+:?\?[^}]*\}")


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def _parse(name: str, service: dict[str, Any]) -> argparse.Namespace:
    try:
        return build_parser().parse_args(_command(service))
    except SystemExit:
        pytest.fail(f"{name}: `slotengine {' '.join(_command(service))}` is not a valid command")


def _with_defaults(value: str) -> str:
    """The value compose would use with none of the file's variables set."""
    return _DEFAULTED.sub(lambda match: match.group(1), value)


def _python_snippets(test: list[str] | str) -> list[str]:
    """The code of every `python -c CODE` in a healthcheck."""
    if isinstance(test, str):
        words = shlex.split(test)
    elif test[0] == "CMD-SHELL":
        words = shlex.split(test[1])
    else:
        words = test[1:]
    return [words[i + 2] for i in range(len(words) - 2) if words[i : i + 2] == ["python", "-c"]]


def test_the_deployment_has_every_process_and_a_migration_step(
    services: dict[str, dict[str, Any]],
) -> None:
    assert set(services) >= {*LONG_RUNNING, "migrate"}


def test_only_the_engine_services_are_built_from_our_image(services: dict[str, dict[str, Any]]) -> None:
    built = {name for name, service in services.items() if "build" in service}
    assert built == set(SUBCOMMANDS)


def test_the_image_runs_the_slotengine_command() -> None:
    assert re.search(r'^ENTRYPOINT \["slotengine"\]$', DOCKERFILE.read_text(), re.MULTILINE)


@pytest.mark.parametrize(("name", "subcommand"), SUBCOMMANDS.items())
def test_each_engine_service_runs_a_real_subcommand(
    services: dict[str, dict[str, Any]], name: str, subcommand: str
) -> None:
    service = services[name]
    assert "entrypoint" not in service, f"{name} must go through the image's `slotengine` entrypoint"
    assert _parse(name, service).command == subcommand


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_each_long_running_service_has_a_healthcheck(services: dict[str, dict[str, Any]], name: str) -> None:
    healthcheck = services[name].get("healthcheck", {})
    assert not healthcheck.get("disable", False)
    test = healthcheck.get("test")
    assert test and test not in (["NONE"], "NONE"), f"{name} has no healthcheck"


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_python_in_healthchecks_compiles(services: dict[str, dict[str, Any]], name: str) -> None:
    test = services[name]["healthcheck"]["test"]
    snippets = _python_snippets(test)
    assert snippets or "python" not in str(test), f"{name}: python code not found in {test}"
    for code in snippets:
        compile(code, f"{name} healthcheck", "exec")


def test_every_slotengine_variable_named_in_the_file_is_a_setting() -> None:
    named = set(_VARIABLE.findall(COMPOSE_FILE.read_text()))
    assert named, "the file names no settings at all"
    assert named <= set(SETTING_VARIABLES), f"not Settings fields: {sorted(named - set(SETTING_VARIABLES))}"


def test_every_variable_an_engine_service_gets_is_explained_in_a_comment(
    services: dict[str, dict[str, Any]],
) -> None:
    comments = "\n".join(
        line for line in COMPOSE_FILE.read_text().splitlines() if line.lstrip().startswith("#")
    )
    explained = set(_VARIABLE.findall(comments))
    for name in SUBCOMMANDS:
        given = {key for key in services[name]["environment"] if key.startswith(ENV_PREFIX)}
        assert given <= explained, f"{name}: undocumented {sorted(given - explained)}"


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_the_environment_makes_valid_settings_naming_this_files_servers(
    services: dict[str, dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read the way the container reads them: as environment variables (lists arrive as JSON).
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)
    environment: dict[str, Any] = services[name]["environment"]
    for key, value in environment.items():
        if key in SETTING_VARIABLES and not _REQUIRED.search(str(value)):
            monkeypatch.setenv(key, _with_defaults(str(value)))
    settings = Settings()
    assert settings.database_url and settings.redis_url, f"{name} would start embedded servers"
    assert urlsplit(settings.database_url).hostname == "postgres"
    assert urlsplit(settings.redis_url).hostname == "redis"


def test_the_api_publishes_and_probes_the_port_it_serves_on(services: dict[str, dict[str, Any]]) -> None:
    api = services["api"]
    port = _parse("api", api).port
    targets = []
    for mapping in api["ports"]:
        if isinstance(mapping, dict):
            targets.append(int(mapping["target"]))
        else:
            targets.append(int(str(mapping).rsplit(":", 1)[-1].split("/")[0]))
    assert targets == [port]
    assert _parse("api", api).host == "0.0.0.0", "the api must listen beyond the container's loopback"
    probe = " ".join(_python_snippets(api["healthcheck"]["test"]))
    assert f"127.0.0.1:{port}/healthz" in probe


def test_no_service_pins_a_container_name_so_replicas_are_possible(
    services: dict[str, dict[str, Any]],
) -> None:
    assert [name for name, service in services.items() if "container_name" in service] == []


@pytest.mark.parametrize("name", ENGINE)
def test_engine_processes_start_after_migrations_and_healthy_servers(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    depends_on = services[name]["depends_on"]
    assert isinstance(depends_on, dict), "the list form only waits for containers to start"
    assert depends_on["migrate"] == {"condition": "service_completed_successfully"}
    assert depends_on["redis"] == {"condition": "service_healthy"}
    if name != "scheduler":
        assert depends_on["postgres"] == {"condition": "service_healthy"}


def test_migrations_wait_for_a_healthy_database_and_run_once(services: dict[str, dict[str, Any]]) -> None:
    migrate = services["migrate"]
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert str(migrate.get("restart", "no")) in {"no", "on-failure"}


def test_every_dependency_is_waited_on_through_its_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        for target, rule in service.get("depends_on", {}).items():
            if target == "migrate":
                continue
            assert rule["condition"] == "service_healthy", f"{name} -> {target}"
            assert "healthcheck" in services[target], f"{name} waits on {target}, which has no healthcheck"
