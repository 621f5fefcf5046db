"""Package contract: public names, cheap import, the compiled core and its twin agree."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dfrepo
from dfrepo import _fastio_py

SRC = Path(dfrepo.__file__).parent


def test_all_names_exist() -> None:
    for name in dfrepo.__all__:
        assert hasattr(dfrepo, name), name


def test_import_loads_no_cloud_sdk_and_is_fast() -> None:
    code = (
        "import sys, time; t=time.perf_counter(); import dfrepo, dfrepo.pull, dfrepo.dragonfly; "
        "dt=time.perf_counter()-t; "
        "bad=[m for m in sys.modules if m.split('.')[0] in ('boto3','botocore','google','azure')]; "
        "print(dt, bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    dt, bad = out.split(" ", 1)
    assert bad.strip() == "[]"
    assert float(dt) < 1.0


def test_stub_matches_twin_signature() -> None:
    tree = ast.parse((SRC / "_fastio.pyi").read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "copy_body")
    stub_params = [a.arg for a in fn.args.args]
    twin_params = list(inspect.signature(_fastio_py.copy_body).parameters)
    assert stub_params == twin_params


def test_compiled_signature_matches_twin() -> None:
    if dfrepo.implementation() != "cython":
        pytest.skip("compiled core not active")
    from dfrepo import _fastio  # type: ignore[attr-defined]

    doc = _fastio.copy_body.__doc__ or ""
    first = doc.splitlines()[0]
    for name in inspect.signature(_fastio_py.copy_body).parameters:
        assert name in first, (name, first)


def test_require_extension_flag_fails_loudly_without_it() -> None:
    env = dict(os.environ, DFREPO_NO_EXTENSIONS="1", DFREPO_REQUIRE_EXTENSION="1")
    proc = subprocess.run([sys.executable, "-c", "import dfrepo.engine.picker"], capture_output=True, text=True, env=env)
    assert proc.returncode != 0 and "both set" in proc.stderr
