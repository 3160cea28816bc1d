"""The package as installed: version, console script, and the stubs of the Rust module match
what the module exports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pumpwatch
from pumpwatch import _core


def test_version_and_console_script():
    out = subprocess.run(
        [sys.executable, "-m", "pumpwatch.cli", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == f"pumpwatch {pumpwatch.__version__}" and pumpwatch.__version__ != "0+unknown"


def test_stubs_name_exactly_what_the_extension_exports():
    stub = Path(pumpwatch.__file__).with_name("_core.pyi")
    assert stub.exists() and Path(pumpwatch.__file__).with_name("py.typed").exists()
    tree = ast.parse(stub.read_text())
    stubbed = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    stubbed |= {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign)}
    exported = {n for n in dir(_core) if not n.startswith("_")}
    assert stubbed - {"Event"} == exported
    for cls in tree.body:
        if isinstance(cls, ast.ClassDef):
            methods = {f.name for f in cls.body if isinstance(f, ast.FunctionDef) and not f.name.startswith("__")}
            real = {m for m in dir(getattr(_core, cls.name)) if not m.startswith("__")}
            assert methods == real, cls.name
