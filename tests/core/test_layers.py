"""The architecture as a rule: the pure layers import without Hydra & co., and no module
borrows another layer's private names."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import detflow
from detflow._core import errors
from tests.support import REPO

PACKAGE = REPO / "detflow"
LAYERS = ("_core", "_search", "_harness", "_hydra", "_launch", "_results")
PURE = ("_core", "_search", "_harness")
HEAVY = ("hydra", "omegaconf", "submitit", "cloudpickle", "torch")

_IMPORT_PURE_LAYERS = f"""
import importlib, importlib.abc, pathlib, sys, types

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ImportError(f"{{name}} is made unimportable for this test")
        return None

sys.meta_path.insert(0, Refuse())
root = pathlib.Path({str(PACKAGE)!r})
stub = types.ModuleType("detflow")  # the package without running detflow/__init__.py
stub.__path__ = [str(root)]
sys.modules["detflow"] = stub
for layer in {PURE!r}:
    for path in sorted((root / layer).glob("*.py")):
        name = "detflow." + layer + ("" if path.stem == "__init__" else "." + path.stem)
        importlib.import_module(name)
        print(name)
"""


def _modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).glob("*.py"))


def test_the_pure_layers_import_with_hydra_omegaconf_submitit_cloudpickle_torch_unimportable() -> (
    None
):
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_PURE_LAYERS],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    imported = set(done.stdout.split())
    expected = {
        f"detflow.{layer}" + ("" if p.stem == "__init__" else f".{p.stem}")
        for layer in PURE
        for p in _modules(layer)
    }
    assert imported == expected
    assert "detflow._harness.run" in imported and "detflow._search.driver" in imported


def _layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "detflow" and parts[1] in LAYERS else None


def test_no_module_imports_a_private_name_of_another_layer() -> None:
    offences = []
    for layer in LAYERS:
        for path in _modules(layer):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.ImportFrom) or node.module is None:
                    continue
                source = _layer_of(node.module)
                if source is None or source == layer:
                    continue
                for alias in node.names:
                    if alias.name.startswith("_"):
                        where = f"{path.relative_to(REPO)}:{node.lineno}"
                        offences.append(f"{where} imports {node.module}.{alias.name}")
    assert offences == []


def test_every_error_detflow_raises_on_purpose_is_a_detflow_error_with_its_exit_status() -> None:
    kinds = [
        errors.ConfigError,
        errors.TrialError,
        errors.CorruptCheckpoint,
        errors.NotResultsError,
        errors.MalformedResults,
        errors.SweepFailed,
    ]
    assert all(issubclass(kind, detflow.DetflowError) for kind in kinds)
    assert detflow.DetflowError is errors.DetflowError
    assert detflow.TrialError is errors.TrialError
    codes = {kind.__name__: kind.exit_code for kind in kinds}
    assert codes == {
        "ConfigError": 2,
        "TrialError": 1,
        "CorruptCheckpoint": 2,
        "NotResultsError": 2,
        "MalformedResults": 2,
        "SweepFailed": 1,
    }
    # A corrupt checkpoint is no longer a ConfigError in disguise.
    assert not issubclass(errors.CorruptCheckpoint, errors.ConfigError)
