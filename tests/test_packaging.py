"""Release facts a user relies on: the Space metadata matches the requirements, the Space installs no test-only
package, and the shipped data is found both from a checkout and from an installed package."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from huggingface_hub import metadata_load
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from reminder import Reminder, paths

ROOT = Path(__file__).resolve().parents[1]


def requirements() -> dict[str, Requirement]:
    """requirements.txt (what the Space installs) by canonical name."""
    lines = (line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines())
    return {canonicalize_name(r.name): r for r in map(Requirement, filter(None, lines))}


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_space_front_matter_matches_requirements() -> None:
    meta = metadata_load(ROOT / "README.md")
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    gradio = requirements()["gradio"]
    assert gradio.specifier.contains(str(meta["sdk_version"])), \
        f"front matter sdk_version {meta['sdk_version']} is outside requirements.txt's {gradio}"
    requires = SpecifierSet(pyproject()["project"]["requires-python"])
    assert requires.contains(f"{meta['python_version']}.0"), meta["python_version"]


def test_requirements_hold_no_test_only_package() -> None:
    project = pyproject()
    test_only = {canonicalize_name(Requirement(r).name) for r in project["project"]["optional-dependencies"]["test"]}
    assert {"pytest", "playwright"} <= test_only
    assert not test_only & set(requirements()), "requirements.txt (installed by the Space) names a test-only package"
    # the package's dependencies are that same file, so the two lists cannot drift apart
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == ["requirements.txt"]


def test_every_package_is_listed() -> None:
    """pyproject.toml lists the packages by name (the data packages need it): a new subpackage must be added."""
    listed = set(pyproject()["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts)
             for top in ("reminder", "attacks", "training", "evaluation", "demo")
             for init in (ROOT / top).rglob("__init__.py")}
    assert found and found <= listed, f"missing from [tool.setuptools] packages: {sorted(found - listed)}"


def test_shipped_data_found_through_paths(tmp_path, monkeypatch) -> None:
    assert (paths.PROMPTS / "harmful.jsonl").is_file() and (paths.EXAMPLES / "figstep.png").is_file()
    assert (paths.ATTACKS / "gcg" / "embedded" / "suffix.txt").is_file()
    assert Reminder.load(paths.CHECKPOINTS / "embedded").model == "embedded"
    monkeypatch.chdir(tmp_path)  # the README's relative paths work from any directory
    assert paths.shipped("checkpoints/embedded") == paths.CHECKPOINTS / "embedded"
    assert paths.shipped("assets/prompts/benign.jsonl").is_file()
    assert paths.shipped("mine") == Path("mine")
    (tmp_path / "checkpoints").mkdir()  # a folder of the user's own wins over the shipped one
    assert paths.shipped("checkpoints") == Path("checkpoints")


def test_wheel_ships_the_data_and_finds_it(tmp_path) -> None:
    """Build the wheel (setuptools in this environment) and import ``reminder.paths`` from it unpacked."""
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} is older than the build needs (77)")
    tracked = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, check=False)
    if tracked.returncode:
        pytest.skip("not a git checkout")
    src = tmp_path / "src"
    files = [f for f in tracked.stdout.decode().split("\0") if f and (ROOT / f).is_file()]
    for f in files:  # a clean copy: the build must not write into the checkout
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    code = "from setuptools import build_meta as b; print(b.build_wheel(r'%s'))" % (tmp_path / "dist")
    built = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = tmp_path / "dist" / built.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "site")
    shipped = {f for f in files if f.startswith(("assets/", "checkpoints/"))}
    assert shipped and {f"reminder/_data/{f}" for f in shipped} <= names
    assert {"app.py", "reminder/paths.py", "reminder/cli.py", "evaluation/__main__.py", "demo/compare.py"} <= names
    assert any(n.endswith("/licenses/LICENSE") for n in names)
    spec = importlib.util.spec_from_file_location("installed_paths", tmp_path / "site" / "reminder" / "paths.py")
    installed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(installed)  # paths.py reads only its own location: no need to import the whole package
    site = (tmp_path / "site").resolve()
    assert installed.ASSETS == site / "reminder" / "_data" / "assets"
    assert installed.CHECKPOINTS == site / "reminder" / "_data" / "checkpoints"
    assert (installed.PROMPTS / "harmful.jsonl").is_file()
    assert (installed.CHECKPOINTS / "embedded-aligned" / "lora" / "adapter_model.safetensors").is_file()
