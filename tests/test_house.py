"""The house: imports run one way between the packages, no module is loaded under two names, and the
wheel installs one top-level name."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO

FOLDERS = {"sparkcnn": "sparkcnn", "pipeline": "sparkcnn.pipeline", "stages": "sparkcnn.stages",
           "schemas": "sparkcnn.schemas"}
# a unit may import only units of a lower level (or itself)
LEVELS = {
    "schemas": 0, "stages": 1,
    "pipeline.errors": 2, "pipeline.numerics": 3, "pipeline": 4, "pipeline.config": 4, "pipeline.stage_keys": 4,
    "runroot": 5, "spark": 6, "data": 6, "training": 7, "query": 8, "deploy": 9, "ml": 10, "bench": 10,
    "cli": 11, "sparkcnn": 12,
}


def modules() -> dict[str, Path]:
    """Every module of the package by its dotted name."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            name = ".".join([package, *parts])
            found[name.removesuffix(".__init__")] = path
    return found


def unit(name: str) -> str:
    """The package a module belongs to: a subpackage of pipeline, or pipeline's own module, or stages..."""
    parts = name.split(".")
    if len(parts) == 1:
        return parts[0]
    if parts[1] != "pipeline":
        return parts[1] if parts[1] in LEVELS else parts[0]
    if len(parts) == 2:
        return "pipeline"
    return parts[2] if (REPO / "pipeline" / parts[2]).is_dir() else f"pipeline.{parts[2]}"


def imported(path: Path, known: dict, top_only: bool) -> set[str]:
    """The package's modules a module imports (at its top level only, or anywhere)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sparkcnn"):
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                      for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sparkcnn")}
    return found


def test_every_package_imports_only_the_packages_below_it():
    known = modules()
    wrong = []
    for name, path in known.items():
        source = unit(name)
        assert source in LEVELS, f"{name}: its package has no level in LEVELS"
        for target in imported(path, known, top_only=False):
            if unit(target) != source and LEVELS[unit(target)] >= LEVELS[source]:
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_itself_through_others_at_load_time():
    known = modules()
    graph = {name: imported(path, known, top_only=True) & known.keys() for name, path in known.items()}
    done, stack = set(), []

    def visit(name):
        if name in stack:
            raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(name):], name]))
        if name in done:
            return
        stack.append(name)
        for target in sorted(graph[name]):
            visit(target)
        stack.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def test_no_module_is_loaded_under_a_second_name():
    names = sorted(n for n in modules() if not n.endswith("__main__"))
    probe = ("import importlib, sys\n"
             f"for name in {names!r}:\n    importlib.import_module(name)\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'pipeline', 'stages', 'schemas'}))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_wheel_installs_one_top_level_name(tmp_path):
    source = tmp_path / "source"  # a clean copy: no build/ folder of an earlier build
    source.mkdir()
    for name in ("pyproject.toml", "README.md", *FOLDERS):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(REPO / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                           if copy is shutil.copytree else {}))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source), "-w", str(tmp_path)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("sparkcnn-*.whl")
    files = zipfile.ZipFile(wheel).namelist()
    assert {f.split("/")[0] for f in files} == {"sparkcnn", wheel.name.split("-py")[0] + ".dist-info"}
    installed = {f.removesuffix(".py").replace("/", ".") for f in files if f.endswith(".py")}
    assert {n.removesuffix(".__init__") for n in installed} == set(modules())
    zipped = ("import sys; sys.path.insert(0, sys.argv[1]); from sparkcnn.pipeline.data import ingest; "
              "assert ingest.__file__.startswith(sys.argv[1]); print(ingest.resolve_data_path(''))")
    done = subprocess.run([sys.executable, "-c", zipped, str(wheel)], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0 and Path(done.stdout.strip()).stat().st_size > 0, done.stderr  # --py-files


def test_every_stage_names_a_function_of_the_registry():
    """Stage functions are referenced by import (sparkcnn.stages.registry), never by a module path resolved at run
    time; every stage of a network, plain and with synced batch statistics, finds its function there."""
    from sparkcnn.schemas.network import Network
    from sparkcnn.stages import registry
    from tests.schemas.test_network import RESIDUAL

    synced = [dict(layer, sync=True) if layer["type"] == "batch_norm" else layer for layer in RESIDUAL]
    for layers in (RESIDUAL, synced):
        network = Network(layers, (8, 8, 3), 10)
        for name, definition in {**network.stage_defs(), "evaluate": network.evaluate_def}.items():
            function = registry.stage_function(definition.function)
            assert getattr(function, "func", function).__module__.startswith("sparkcnn.stages."), name
