"""What a fresh install gets: declared dependencies, pinned versions, the shipped model inside."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
# Import names that differ from their distribution's name.
DISTRIBUTION_OF = {"yaml": "pyyaml"}


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0]).lower()


def _requirements(extras: bool = True) -> list[str]:
    reqs = list(PYPROJECT["dependencies"])
    if extras:
        reqs += [r for group in PYPROJECT["optional-dependencies"].values() for r in group]
    return reqs


def _imported_modules() -> set[str]:
    """Top-level names of every import in speechvq/, those inside functions included."""
    found = set()
    for path in (REPO / "speechvq").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"speechvq", "__future__"}


def test_every_imported_package_is_declared():
    declared = {_name(r) for r in _requirements()}
    installed = md.packages_distributions()
    missing = []
    for module in sorted(_imported_modules()):
        names = {_name(d) for d in installed.get(module, [])} or {
            _name(DISTRIBUTION_OF.get(module, module))
        }
        if not names & declared:
            missing.append(f"{module} (from {', '.join(sorted(names))})")
    assert not missing, f"imported but not in pyproject.toml: {missing}"


def test_runtime_dependencies_have_upper_bounds_and_a_tested_pin():
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[_name(name)] = version
    for req in _requirements():
        name = _name(req)
        if name == "speechvq":  # the `test` extra names the others
            continue
        assert name in pins, f"{name}: no tested version in constraints.txt"
    for req in _requirements(extras=False):
        assert "<" in req, f"{req}: give an upper bound (a major release may break us)"


def test_the_shipped_model_is_package_data():
    import speechvq.pretrained
    from speechvq.inference import loading

    assert loading.pretrained_dir() == Path(speechvq.pretrained.__file__).parent
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["speechvq.pretrained"]
    for filename, _ in loading.REGISTRY.values():
        assert any(Path(filename).match(p) for p in patterns), filename
        assert (loading.pretrained_dir() / filename).is_file()


@pytest.mark.slow
def test_a_built_wheel_carries_the_shipped_model(tmp_path):
    from speechvq.inference import loading

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("speechvq-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for filename, _ in loading.REGISTRY.values():
        assert f"speechvq/pretrained/{filename}" in names
    assert "speechvq/pretrained/README.md" in names and "speechvq/cli/__init__.py" in names
    assert "speechvq/web/static/index.html" in names and "speechvq/web/static/app.js" in names


def test_license_and_changelog_match_the_package():
    import speechvq

    assert PYPROJECT["license"] == {"text": "MIT"}
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    changelog = (REPO / "CHANGELOG.md").read_text()
    newest = re.search(r"^## (\S+)", changelog, re.M).group(1)
    assert newest == speechvq.__version__, "bump CHANGELOG.md with the version"
