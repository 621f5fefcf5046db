"""An unusable cache directory does not fail pulls (issue #15); the cache's own files.

The unusable cases run two real pulls (two LOADs) in a child process.  Root may write
anywhere, so as root the child runs without ``CAP_DAC_OVERRIDE``/``CAP_DAC_READ_SEARCH``
(``setpriv``), which makes permissions bind it like any UID: a read-only
``DFREPO_CACHE_DIR`` and a ``$HOME`` owned by another UID (as with OpenShift's random
UIDs).  No ``$HOME`` and no passwd entry is simulated in-process.

``dfrepo pull`` (the CLI) runs the same way as ``python -m dfrepo`` in such a child: the
default cache directory unusable is one warning line and a pull without the cache; a
directory the user named with ``--cache-dir`` is a :class:`~dfrepo.errors.CacheError`
(exit 1), because they asked for that one.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dfrepo.cache import ModelCache, open_cache
from dfrepo.cache.directory import LOCK_MODE
from dfrepo.errors import DfrepoWarning
from dfrepo.objects import RemoteObject

RANDOM_UID = 1000770000  # an OpenShift-style UID

_CHILD = r"""
import json, logging, os, sys, warnings
from dfrepo.pull import pull
logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
src, out = sys.argv[1], sys.argv[2]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for i in range(2):  # two LOADs: both succeed, one warning
        res = pull(src, os.path.join(out, f"m{i}"), overrides={"cache": "on"})
print(json.dumps({"files": res.files, "warnings": [str(w.message) for w in caught
                  if w.category.__name__ == "DfrepoWarning"]}))
"""


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temp tree another UID can read (pytest's tmp_path root is 0700)."""
    root = Path(tempfile.mkdtemp(prefix="dfrepo-cache-unusable-"))
    root.chmod(0o755)
    src = root / "src" / "1"
    src.mkdir(parents=True)
    (root / "src" / "config.pbtxt").write_text('name: "m"\n')
    (src / "model.bin").write_bytes(b"x" * 1000)
    for p in (root / "src", src, root / "src" / "config.pbtxt", src / "model.bin"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    out = root / "out"
    out.mkdir()
    out.chmod(0o777)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _unprivileged(root: Path, env: dict[str, str], argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run *argv* in *root* with only *env* (plus PATH), as root without the DAC override."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1",
            "TRITON_DRAGONFLY_CONFIG_PATH": "", "TRITON_CLOUD_CREDENTIAL_PATH": ""}
    base.update(env)
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("setpriv (util-linux) is needed to drop root's DAC override")
        argv = [setpriv, "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search",
                "--reuid=0", "--", *argv]
    return subprocess.run(argv, env=base, capture_output=True, text=True, timeout=120, cwd=str(root))


def _read_only_dir(root: Path) -> Path:
    ro = root / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return ro


def _foreign_home(root: Path) -> Path:
    """Another UID's home, 0o755: ``~/.cache`` cannot be created in it."""
    home = root / "home"
    home.mkdir()
    home.chmod(0o755)
    if os.geteuid() == 0:
        os.chown(home, RANDOM_UID, RANDOM_UID)
    return home


def _run_child(root: Path, env: dict[str, str]) -> dict[str, Any]:
    proc = _unprivileged(root, env, [sys.executable, "-c", _CHILD, str(root / "src"), str(root / "out")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["files"] == 2
    assert len(result["warnings"]) == 1, result  # warned once, not once per LOAD
    assert "continuing without the cache" in result["warnings"][0]
    assert proc.stderr.count("continuing without the cache") == 1, proc.stderr  # logged too
    for i in range(2):
        assert (root / "out" / f"m{i}" / "1" / "model.bin").read_bytes() == b"x" * 1000
    return result


def test_read_only_cache_dir_does_not_fail_the_pull(shared_tmp: Path) -> None:
    ro = _read_only_dir(shared_tmp)
    _run_child(shared_tmp, {"HOME": str(shared_tmp), "DFREPO_CACHE_DIR": str(ro / "cache")})


def test_foreign_home_does_not_fail_the_pull(shared_tmp: Path) -> None:
    home = _foreign_home(shared_tmp)
    res = _run_child(shared_tmp, {"HOME": str(home)})
    assert str(home) in res["warnings"][0]


def test_no_home_at_all_does_not_fail_the_pull(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pwd

    from dfrepo.pull import pull

    def no_entry(uid: int) -> Any:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    for var in ("HOME", "DFREPO_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.pbtxt").write_text("x")
    with pytest.warns(DfrepoWarning, match="DFREPO_CACHE_DIR"):
        res = pull(str(tmp_path / "src"), tmp_path / "out", overrides={"cache": "on"}, env={})
    assert res.files == 1


# -- the CLI: `dfrepo pull` -----------------------------------------------------------------


def _run_cli(root: Path, env: dict[str, str], *flags: str, name: str = "m0") -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "dfrepo", "pull", str(root / "src"), str(root / "out" / name), *flags]
    return _unprivileged(root, env, argv)


def _cli_pulled_uncached(root: Path, proc: subprocess.CompletedProcess[str], name: str = "m0") -> str:
    """The CLI pull succeeded without the cache and said so once; returns the warning line."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (root / "out" / name / "1" / "model.bin").read_bytes() == b"x" * 1000
    lines = [ln for ln in proc.stderr.splitlines() if "continuing without the cache" in ln]
    assert len(lines) == 1, proc.stderr  # one line: not once as a log line and again as a warning
    assert "dfrepo: error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "pulled 2 files" in proc.stdout and "cache 0 B" in proc.stdout, proc.stdout
    return lines[0]


def test_cli_read_only_cache_dir_does_not_fail_the_pull(shared_tmp: Path) -> None:
    ro = _read_only_dir(shared_tmp)
    proc = _run_cli(shared_tmp, {"HOME": str(shared_tmp), "DFREPO_CACHE_DIR": str(ro / "cache")})
    line = _cli_pulled_uncached(shared_tmp, proc)
    assert str(ro / "cache") in line and "DFREPO_CACHE_DIR" in line
    # --json: the result document on stdout, the warning on stderr only.
    proc = _run_cli(shared_tmp, {"HOME": str(shared_tmp), "DFREPO_CACHE_DIR": str(ro / "cache")}, "--json",
                    name="m1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["files"] == 2
    assert proc.stderr.count("continuing without the cache") == 1, proc.stderr


def test_cli_foreign_home_does_not_fail_the_pull(shared_tmp: Path) -> None:
    home = _foreign_home(shared_tmp)
    line = _cli_pulled_uncached(shared_tmp, _run_cli(shared_tmp, {"HOME": str(home)}))
    assert str(home) in line


def test_cli_no_home_at_all_does_not_fail_the_pull(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import pwd

    from dfrepo import errors
    from dfrepo.cli import main

    def no_entry(uid: int) -> Any:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    for var in ("HOME", "DFREPO_CACHE_DIR", "XDG_CACHE_HOME", "DFREPO_PROXY", "DRAGONFLY_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TRITON_DRAGONFLY_CONFIG_PATH", str(tmp_path / "absent.json"))
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    monkeypatch.setattr(errors, "_warned", set())  # a new process (the API test warned already)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.pbtxt").write_text("x")
    assert main(["pull", str(tmp_path / "src"), str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert "pulled 1 file" in out
    assert err.count("continuing without the cache") == 1 and "DFREPO_CACHE_DIR" in err, err
    assert (tmp_path / "out" / "config.pbtxt").read_text() == "x"


def test_cli_named_cache_dir_that_is_unusable_fails_clearly(shared_tmp: Path) -> None:
    ro = _read_only_dir(shared_tmp)
    # The default directory is fine; the one named on the command line is not: exit 1.
    proc = _run_cli(shared_tmp, {"HOME": str(shared_tmp), "DFREPO_CACHE_DIR": str(shared_tmp / "ok")},
                    "--cache-dir", str(ro / "cache"))
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("dfrepo: error: cache directory ") and str(ro / "cache") in lines[0]
    assert "--cache-dir" in lines[0] and "--no-cache" in lines[0]
    assert not (shared_tmp / "out" / "m0").exists()  # failed before any download
    proc = _run_cli(shared_tmp, {"HOME": str(shared_tmp)}, "--cache-dir", str(ro / "cache"), "--json")
    assert proc.returncode == 1 and json.loads(proc.stdout)["error"]["type"] == "CacheError", proc.stdout
    # --no-cache wins over a named directory.
    proc = _run_cli(shared_tmp, {"HOME": str(shared_tmp)}, "--cache-dir", str(ro / "cache"), "--no-cache")
    assert proc.returncode == 0 and "continuing without the cache" not in proc.stderr, proc.stderr


def test_open_cache_warns_once_per_directory(tmp_path: Path) -> None:
    bad = tmp_path / "file"
    bad.write_text("not a directory")
    with pytest.warns(DfrepoWarning, match="continuing without the cache"):
        assert open_cache(bad / "cache") is None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert open_cache(bad / "cache") is None  # no second warning
    assert isinstance(open_cache(tmp_path / "ok"), ModelCache)


def test_lock_file_mode(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        ModelCache(tmp_path / "c")
        assert stat.S_IMODE(os.stat(tmp_path / "c" / "lock").st_mode) == LOCK_MODE == 0o644
        # A lock file left world-writable by an older dfrepo is tightened.
        os.chmod(tmp_path / "c" / "lock", 0o666)
        ModelCache(tmp_path / "c")
        assert stat.S_IMODE(os.stat(tmp_path / "c" / "lock").st_mode) == 0o644
    finally:
        os.umask(old)


def test_every_cache_fd_is_cloexec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real_os_open, real_open = os.open, builtins.open

    def os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real_os_open(path, flags, *args, **kwargs)
        assert flags & os.O_CLOEXEC and not os.get_inheritable(fd), path
        seen.append(f"os.open {path}")
        return fd

    def open_(file: Any, *args: Any, **kwargs: Any) -> Any:
        fh = real_open(file, *args, **kwargs)
        if isinstance(file, (str, Path)) and str(file).startswith(str(tmp_path)):
            assert not os.get_inheritable(fh.fileno()), file
            seen.append(f"open {file}")
        return fh

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", open_)
    cache = ModelCache(tmp_path / "c", verify="full")
    src = tmp_path / "f.bin"
    src.write_bytes(b"y" * 4096)
    obj = RemoteObject("f.bin", 4096, "http://h/f", version="v1", source="s3://b/f.bin")
    cache.store(obj, src)
    assert cache.materialize(obj, tmp_path / "g.bin")
    assert cache.entries() and cache.usage()[0] == 1
    cache.prune(max_bytes=0)
    ModelCache(tmp_path / "c")  # reopen: lock tag, stale-temp sweep
    assert any("lock" in s for s in seen) and any(".json" in s for s in seen), seen
