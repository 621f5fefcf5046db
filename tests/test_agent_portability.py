"""Where the built agent can run: the shim's glibc floor and the Dockerfile that builds it.

No Docker engine here, so the image is checked by reading: the wheel must be built in a stage
FROM the same Triton image it is installed into (a compiled wheel installs only on the Python
it was built for: 3.10 in the 23.08-24.12 images, 3.12 in 25.xx), from every input the build
reads, with nothing built on the host in the context.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent

# Ubuntu 22.04 (glibc 2.35) is the oldest base among the Triton images of the supported range
# (the nvidia-pytriton 0.3.1 build of Triton 2.36 is manylinux_2_35); docs/triton-agent.md.
GLIBC_FLOOR = (2, 35)


def _glibc_versions(lib: Path) -> set[tuple[int, ...]]:
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) not installed")
    out = subprocess.run([objdump, "-T", str(lib)], capture_output=True, text=True, check=True).stdout
    return {tuple(map(int, v.split("."))) for v in re.findall(r"\bGLIBC_(\d+(?:\.\d+)+)", out)}


def test_built_agent_loads_on_the_oldest_supported_triton_glibc() -> None:
    from dfrepo.triton.install import find_shim

    shim = find_shim()
    libs = [shim, *sorted(shim.parent.parent.glob("_fastio*.so"))]
    for lib in libs:
        versions = _glibc_versions(lib)
        assert versions, f"{lib}: no GLIBC symbol versions found"
        newest = max(versions)
        print(f"\n[portability] {lib.name}: needs GLIBC_{'.'.join(map(str, newest))}")
        assert newest <= GLIBC_FLOOR, (
            f"{lib.name} needs GLIBC_{'.'.join(map(str, newest))}, newer than the glibc of the oldest "
            f"supported Triton image ({'.'.join(map(str, GLIBC_FLOOR))}): build it on an older system "
            f"or in the image (Dockerfile)"
        )


# -- Dockerfile ------------------------------------------------------------------------------
def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of every instruction; continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def _stages(text: str) -> tuple[list[str], list[dict[str, object]]]:
    """(ARG lines before the first FROM, stages as {image, name, instructions})."""
    global_args: list[str] = []
    stages: list[dict[str, object]] = []
    for keyword, args in _instructions(text):
        if keyword == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", args, re.IGNORECASE)
            assert m, args
            stages.append({"image": m.group(1), "name": m.group(2), "instructions": []})
        elif not stages:
            if keyword == "ARG":
                global_args.append(args)
        else:
            stages[-1]["instructions"].append((keyword, args))  # type: ignore[attr-defined]
    return global_args, stages


def _dockerignored(rel: str, patterns: list[str]) -> bool:
    ignored = False
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        hit = any(fnmatch.fnmatch(part, pat) for part in _prefixes(rel)) or (
            pat.startswith("**/") and any(fnmatch.fnmatch(p, pat[3:]) for p in rel.split("/"))
        )
        if hit:
            ignored = not negate
    return ignored


def _prefixes(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def test_dockerfile_builds_the_wheel_in_the_image_it_installs_into() -> None:
    text = (ROOT / "Dockerfile").read_text()
    global_args, stages = _stages(text)
    assert len(stages) == 2, [s["image"] for s in stages]
    build, final = stages
    # Same base image, parameterised by one ARG declared before the first FROM.
    assert build["image"] == final["image"], (build["image"], final["image"])
    used = re.findall(r"\$\{?(\w+)", str(build["image"]))
    assert used and all(any(a.split("=")[0] == u for a in global_args) for u in used), (used, global_args)
    assert build["name"] and final["name"] is None

    build_ins = build["instructions"]
    final_ins = final["instructions"]
    assert isinstance(build_ins, list) and isinstance(final_ins, list)
    runs = " ".join(a for k, a in build_ins if k == "RUN")
    assert re.search(r"pip wheel|-m build\b", runs), runs
    assert "gcc" in runs and "libc6-dev" in runs  # the shim and the Cython core compile here
    # The final stage installs the wheel of the build stage, never one from the host.
    copies = [a for k, a in final_ins if k in ("COPY", "ADD")]
    assert any(a.startswith(f"--from={build['name']} ") for a in copies), copies
    assert not any("dist/" in a for a in copies), copies
    final_runs = " ".join(a for k, a in final_ins if k == "RUN")
    assert "pip\" install" in final_runs or "pip install" in final_runs
    assert "install-agent" in final_runs or "install_agent(" in final_runs

    # Every input the build reads is copied into the build stage and not dockerignored.
    copied: list[str] = []
    for k, a in build_ins:
        if k == "COPY":
            copied += [s.rstrip("/") for s in a.split()[:-1] if not s.startswith("--")]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = ["pyproject.toml", "setup.py", project["project"]["readme"]]
    for where in project["tool"]["setuptools"]["packages"]["find"]["where"]:
        needed += [p.relative_to(ROOT).as_posix() for p in (ROOT / where).rglob("*")
                   if p.is_file() and p.suffix in (".py", ".pyx", ".pyi", ".c", ".ldscript", ".typed")]
    for line in (ROOT / "MANIFEST.in").read_text().splitlines():
        if line.startswith("include "):
            needed += line.split()[1:]
    ignore = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    generated = {"src/dfrepo/_fastio.c"}  # cythonized in the build stage
    for rel in needed:
        if rel in generated:
            assert _dockerignored(rel, ignore), f"{rel}: a host-generated file would enter the build"
            continue
        assert any(rel == c or rel.startswith(c + "/") for c in copied), f"{rel} is not copied into the build stage"
        assert not _dockerignored(rel, ignore), f"{rel} is excluded by .dockerignore"
    # Nothing built on the host enters the context.
    for rel in (".venv/bin/python", ".cache/triton/bin/tritonserver", "src/dfrepo/_fastio.cpython-310-x86_64-linux-gnu.so",
                "src/dfrepo/triton/_agent_shim.cpython-312-x86_64-linux-gnu.so", "dist/dfrepo-0.1.0-cp311-cp311-linux_x86_64.whl",
                "build/lib/dfrepo/__init__.py"):
        assert _dockerignored(rel, ignore), f"{rel} would be sent to the Docker build context"
