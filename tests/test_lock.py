"""The locks (requirements/*.txt, written by `make lock`) and setup.cfg agree, and setup.cfg declares what the
package imports. The dependency closure is computed from the installed distributions' metadata, independently
of pip-compile's own annotations."""
from __future__ import annotations

import ast
import configparser
import importlib.metadata as md
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
# kept out of the locks on purpose: torch is chosen per machine (Makefile TORCH), the others are pip's own
UNLOCKED = {"torch", "setuptools", "pip"}
# declared although no module of gen4gen imports them, and why
NOT_IMPORTED = {"peft": "diffusers loads LoRA weights through it",
                "python-multipart": "FastAPI parses stage=serve's uploaded query images with it"}


def _requirements(text: str) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [Requirement(line) for line in lines if line]


def _setup_cfg() -> tuple[list[Requirement], dict[str, list[Requirement]]]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    runtime = _requirements(cfg["options"]["install_requires"])
    extras = {name: _requirements(value) for name, value in cfg["options.extras_require"].items()}
    return runtime, extras


def _lock(name: str) -> tuple[dict[str, str], list[str]]:
    """{package: version} of a lock file and the extras its pip-compile command line named."""
    text = (ROOT / "requirements" / name).read_text()
    pins = {canonicalize_name(m[1]): m[2] for m in re.finditer(r"^([A-Za-z0-9._-]+)==(\S+)", text, re.M)}
    return pins, re.findall(r"--extra=(\S+)", text)


def _closure(requirements: list[Requirement]) -> set[str]:
    """Every distribution the requirements pull in, through the installed packages' metadata."""
    seen: set[tuple[str, frozenset]] = set()
    names: set[str] = set()
    todo = [(req, "") for req in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(name)
        try:
            dist_requires = md.requires(name) or []
        except md.PackageNotFoundError:
            pytest.fail(f"{name} is required but not installed: make install-test")
        for extra_of_dep in ["", *req.extras]:
            todo.extend((Requirement(r), extra_of_dep) for r in dist_requires)
    return names


@pytest.mark.parametrize("lock_file", ["runtime.txt", "test.txt"])
def test_lock_holds_exactly_what_setup_cfg_needs(lock_file):
    runtime, extras = _setup_cfg()
    pins, locked_extras = _lock(lock_file)
    assert (lock_file == "test.txt") == bool(locked_extras)
    wanted = runtime + [req for extra in locked_extras for req in extras[extra]]
    # every declared requirement is locked at a version it allows
    for req in wanted:
        name = canonicalize_name(req.name)
        if name in UNLOCKED:
            continue
        assert name in pins, f"{name} is declared in setup.cfg but not locked in {lock_file}: make lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"{lock_file}: {name}=={pins[name]} outside {req}"
    # every lock entry is needed, and nothing needed is missing
    needed = _closure(wanted) - UNLOCKED
    assert set(pins) - needed == set(), f"{lock_file} pins packages nothing needs: make lock"
    assert needed - set(pins) == set(), f"{lock_file} misses packages the requirements pull in: make lock"


def test_runtime_lock_is_a_subset_of_the_test_lock():
    runtime, _ = _lock("runtime.txt")
    test, _ = _lock("test.txt")
    assert {name: test.get(name) for name in runtime} == runtime
    assert not {"pytest", "pytest-xdist", "onnx", "datasets", "segment-anything"} & set(runtime)


def test_installed_environment_is_the_test_lock():
    pins, _ = _lock("test.txt")
    wrong = {name: (md.version(name), version) for name, version in pins.items() if md.version(name) != version}
    assert not wrong, f"installed vs locked: {wrong} (make install-test, or make lock after testing new versions)"


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level modules imported anywhere in gen4gen -> the files importing them."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "gen4gen").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top != "gen4gen":
                    found.setdefault(top, set()).add(path.relative_to(ROOT).as_posix())
    return found


def test_setup_cfg_declares_what_gen4gen_imports():
    runtime, extras = _setup_cfg()
    declared = {canonicalize_name(r.name) for r in runtime}
    optional = {canonicalize_name(r.name) for reqs in extras.values() for r in reqs}
    distributions = md.packages_distributions()
    imported: set[str] = set()
    for module, files in _third_party_imports().items():
        dists = {canonicalize_name(d) for d in distributions.get(module, [])}
        assert dists, f"{module} (imported by {sorted(files)}) is not installed"
        assert dists & (declared | optional), f"{module} (imported by {sorted(files)}) is not declared in setup.cfg"
        imported |= dists
    unused = declared - imported - set(NOT_IMPORTED)
    assert not unused, f"declared in install_requires but never imported: {sorted(unused)}"
