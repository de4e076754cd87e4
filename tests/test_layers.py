"""The package layers point one way: each module imports only from its own layer and those below it, as listed in
``reminder/__init__.py``'s docstring (parsed here, so the list lives in one place)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import reminder

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("reminder", "attacks", "training")


def layers() -> dict[str, int]:
    """Dotted module or package name -> layer index (0: the lowest), from the docstring's ``Layers:`` block."""
    block = reminder.__doc__.split("Layers:", 1)[1].split("\n\n", 2)[1]
    out: dict[str, int] = {}
    for i, entry in enumerate(re.split(r"\n    (?=\w+:)", "\n" + block)[1:]):
        for name in entry.split(":", 1)[1].split():
            assert name not in out, f"{name} is listed twice"
            out[name] = i
    return out


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(name: str, table: dict[str, int]) -> int | None:
    """The layer of the longest listed prefix of ``name`` (None: outside the packages)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in table:
            return table[".".join(parts[:n])]
    return None


def imported(path: Path, name: str) -> set[str]:
    """Every project module ``path`` imports, top-level or inside functions (``from pkg import mod`` counts as
    ``pkg.mod`` where ``mod`` is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                is_module = (ROOT / sub.replace(".", "/")).with_suffix(".py").is_file() \
                    or (ROOT / sub.replace(".", "/")).is_dir()
                out.add(sub if is_module else base)
    return {m for m in out if m.split(".")[0] in PACKAGES}


def test_every_import_points_down_the_layers():
    table = layers()
    wrong, unlisted = [], []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = module_name(path)
            own = layer_of(name, table)
            if own is None:
                unlisted.append(name)
                continue
            for target in imported(path, name):
                if (layer := layer_of(target, table)) is not None and layer > own:
                    wrong.append(f"{name} imports {target}")
    assert not unlisted, f"modules in no layer: {unlisted}"
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_core_imports_no_attack_training_or_harness_module():
    table = layers()
    core = table["reminder.generation"]
    assert all(table[n] < core for n in ("reminder.paths", "attacks.compose")) and table["reminder.eval"] > core
    assert table["training"] > core and table["attacks.gcg"] > core


def test_one_attack_registry():
    from attacks import compose
    from reminder import compare

    assert compare.ATTACKS is compose.ATTACKS
    assert set(compose.ATTACKS) >= {"none", "figstep", "mmsb-typo", "mmsb-sd-typo", "prefill", "template", "pgd", "gcg",
                                    "bap"}
