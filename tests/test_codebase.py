"""What the codebase promises its next contributor: every setting documented, and every
library it imports named in pyproject.toml. (tests/conftest.py refuses a test module without
a category marker.)"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

import pytest
from pydantic_settings import BaseSettings

from agents.recorder.settings import RecorderSettings
from agents.settings import AgentSettings
from agents.watchdog.service import WatchdogSettings
from api.settings import Settings
from core.paths import REPO_ROOT

pytestmark = pytest.mark.unit

PACKAGES = ("core", "agents", "api", "kaiwa")


def _configuration_section() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("settings", [Settings, AgentSettings, RecorderSettings, WatchdogSettings])
def test_every_setting_has_a_description_and_a_row_in_the_readme(
    settings: type[BaseSettings],
) -> None:
    section = _configuration_section()
    undescribed = [name for name, field in settings.model_fields.items() if not field.description]
    undocumented = [
        name.upper() for name in settings.model_fields if f"`{name.upper()}`" not in section
    ]
    assert undescribed == [] and undocumented == []


def _imported_top_level_modules() -> set[str]:
    modules: set[str] = set()
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    modules |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - set(PACKAGES)


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_pyproject_names_every_library_the_code_imports() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    named = {_normalized(re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0]) for r in requirements}
    owners = packages_distributions()
    unnamed = [
        module
        for module in sorted(_imported_top_level_modules())
        if not {_normalized(d) for d in owners.get(module, [module])} & named
    ]
    assert unnamed == []
