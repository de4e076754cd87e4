"""The layers point one way (docs/DESIGN.md, "Layers"): the import-linter contracts in pyproject.toml hold for every
import, at the top of a module or inside a function, and every top-level package is under them. One attack registry."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def contracts() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def test_every_package_is_under_the_contracts():
    packages = {init.parent.name for init in ROOT.glob("*/__init__.py")} - {"tests"}
    assert set(contracts()["root_packages"]) == packages
    layers = next(c for c in contracts()["contracts"] if c["type"] == "layers")["layers"]
    assert layers[-1] == "reminder" and set(layers) == packages  # the core at the bottom, every package in a layer


def test_the_import_contracts_hold():
    pytest.importorskip("importlinter", reason="import-linter is in the test extra: pip install -e '.[test]'")
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def test_one_attack_registry():
    from attacks import compose

    assert set(compose.ATTACKS) >= {"none", "figstep", "mmsb-typo", "mmsb-sd-typo", "prefill", "template", "pgd", "gcg",
                                    "bap"}
    sources = [ROOT / "app.py", *(p for pkg in contracts()["root_packages"] for p in (ROOT / pkg).rglob("*.py"))]
    registries = [p.relative_to(ROOT).as_posix() for p in sources
                  if re.search(r"^ATTACKS\b[^=]*=\s*\{", p.read_text(), re.M)]
    assert registries == ["attacks/compose.py"], registries
