#!/usr/bin/env bash
# Prepare a machine (fresh Debian 12, run as root) for dfrepo development, tests and benchmarks.
#
# Idempotent: every step checks whether its result is already there and skips itself if so,
# so a rerun on a prepared machine takes a few seconds.
#
#   scripts/bootstrap.sh                        # system packages, .venv, azurite, triton
#   BOOTSTRAP_EXTRAS=x scripts/bootstrap.sh     # also the extra "x" (all, test, progress, bench are always in)
#
# Environment:
#   BOOTSTRAP_EXTRAS   comma-separated extras added to "all,test,progress,bench"
#   BOOTSTRAP_FORCE=1  redo the pip install even when nothing changed since the last run
#   PYTHON             interpreter used to create the venv (default: python3)
#   BOOTSTRAP_NO_APT=1 never call apt-get (fail later if something is missing)
#
# Results (all under the repository root, all git-ignored):
#   .venv/                         the project venv with dfrepo installed editable
#   .cache/npm/node_modules/.bin/  azurite-blob
#   .cache/triton/                 tritonserver from the nvidia-pytriton wheel, python stub in place
#   .cache/triton-<major.minor>/   the other Triton builds of scripts/triton-versions.env (same layout)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
CACHE="$REPO/.cache"
PYTHON="${PYTHON:-python3}"
EXTRAS="all,test,progress,bench${BOOTSTRAP_EXTRAS:+,${BOOTSTRAP_EXTRAS}}"
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '[bootstrap] %s\n' "$*"; }
die() { printf '[bootstrap] ERROR: %s\n' "$*" >&2; exit 1; }
trap 'die "failed at line $LINENO: $BASH_COMMAND"' ERR

# Run a noisy command; show its output only when it fails.
quiet() {
    local out
    out="$(mktemp)"
    if ! "$@" >"$out" 2>&1; then
        tail -n 60 "$out" >&2
        rm -f "$out"
        die "command failed: $*"
    fi
    rm -f "$out"
}

# ---------------------------------------------------------------------------------------------
# 1. System packages
# ---------------------------------------------------------------------------------------------
pkg_installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]; }

# "package:command" — a package is wanted when neither it is installed nor (if a command is
# given) that command is on PATH; node/npm for instance may come from NodeSource, not Debian.
apt_wanted=(
    nginx-light:nginx        # benchmark origin and tests/servers nginx_origin
    nodejs:node npm:npm      # azurite
    gcc:gcc libc6-dev:       # Cython extension and the Triton repository agent shim
    libpython3.11:           # the Triton python backend stub links libpython3.11.so.1.0
    iproute2:ip util-linux:unshare   # network/mount namespaces for isolated runs
    openssl:openssl ca-certificates: curl:curl
    strace:strace
    # The real Dragonfly (scripts/build-dragonfly.sh): protoc + well-known protos for the
    # dragonfly-api crate, libclang for RocksDB's bindgen, C/C++ toolchain for RocksDB/aws-lc.
    protobuf-compiler:protoc libprotobuf-dev: libclang-dev: pkg-config:pkg-config
    g++:g++ make:make cmake:cmake time:
)
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    apt_wanted+=(python3: python3-venv: python3-dev:)
elif [[ "$(command -v "$PYTHON")" == /usr/bin/* ]]; then
    apt_wanted+=(python3-venv: python3-dev:)   # Debian's python3 needs these for venv + Cython
fi
if [[ ",${BOOTSTRAP_EXTRAS:-}," == *,bench,* ]]; then
    apt_wanted+=(squid:squid aria2:aria2c)
fi

missing=()
for entry in "${apt_wanted[@]}"; do
    pkg="${entry%%:*}" cmd="${entry#*:}"
    pkg_installed "$pkg" && continue
    [[ -n "$cmd" ]] && command -v "$cmd" >/dev/null 2>&1 && continue
    missing+=("$pkg")
done
if ((${#missing[@]})); then
    [[ "${BOOTSTRAP_NO_APT:-0}" == 1 ]] && die "missing Debian packages: ${missing[*]} (BOOTSTRAP_NO_APT=1)"
    [[ "$(id -u)" == 0 ]] || die "missing Debian packages (${missing[*]}); run as root or install them"
    log "apt: installing ${missing[*]}"
    # Keep maintainer scripts from starting services (nginx on :80, squid) on this machine.
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        trap 'rm -f "$policy"' EXIT   # also on failure: never leave our policy behind
    fi
    quiet apt-get update -q
    quiet apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    log "apt: all packages present"
fi

# ---------------------------------------------------------------------------------------------
# 2. Python venv and the editable install
# ---------------------------------------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
    log "venv: creating $VENV with $PYTHON"
    quiet "$PYTHON" -m venv "$VENV"
    quiet "$VENV/bin/python" -m pip install -q --upgrade pip
else
    log "venv: $VENV exists"
fi
PY="$VENV/bin/python"

# The install is redone only when its inputs change: build files, Cython sources, extras.
mkdir -p "$CACHE/bootstrap"
stamp="$CACHE/bootstrap/pip.stamp"
want="$(
    {
        echo "extras=$EXTRAS"
        cd "$REPO"
        inputs=()
        for f in pyproject.toml setup.py setup.cfg src; do [[ -e "$f" ]] && inputs+=("$f"); done
        # Generated C (e.g. src/dfrepo/_fastio.c) is an output, not an input; only the
        # hand-written C of the Triton shim counts.
        find "${inputs[@]}" -type f \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' \
            -o -name '*.ldscript' -o -path 'src/dfrepo/triton/*.c' -o -name '*.h' \
            -o -name pyproject.toml -o -name setup.py -o -name setup.cfg \) \
            -print0 | sort -z | xargs -0 -r sha256sum
    } | sha256sum | cut -d' ' -f1
)"
if [[ "${BOOTSTRAP_FORCE:-0}" != 1 && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
    && "$PY" -c 'import dfrepo' >/dev/null 2>&1; then
    log "pip: dfrepo[$EXTRAS] up to date"
else
    log "pip: installing -e .[$EXTRAS]"
    quiet "$PY" -m pip install -q --upgrade pip
    quiet "$PY" -m pip install -q -e "$REPO[$EXTRAS]"
    echo "$want" >"$stamp"
fi

# ---------------------------------------------------------------------------------------------
# 3. Azurite (npm), local to the repository
# ---------------------------------------------------------------------------------------------
if [[ -x "$CACHE/npm/node_modules/.bin/azurite-blob" ]]; then
    log "npm: azurite present"
else
    command -v npm >/dev/null 2>&1 || die "npm not found (apt package npm)"
    log "npm: installing azurite@3 into $CACHE/npm"
    mkdir -p "$CACHE/npm"
    quiet npm install --prefix "$CACHE/npm" --no-audit --no-fund --loglevel=error azurite@3
    [[ -x "$CACHE/npm/node_modules/.bin/azurite-blob" ]] || die "azurite-blob missing after npm install"
fi

# ---------------------------------------------------------------------------------------------
# 4. Triton from the nvidia-pytriton wheel (what pytriton's _prepare_triton_inference_server does)
# ---------------------------------------------------------------------------------------------
SP="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
PYVER="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
TRITON_SRC="$SP/pytriton/tritonserver"
TRITON="$CACHE/triton"
[[ -x "$TRITON_SRC/bin/tritonserver" ]] || die "nvidia-pytriton is not installed in $VENV ($TRITON_SRC)"
PYTRITON_VER="$("$PY" -c 'import importlib.metadata as m; print(m.version("nvidia-pytriton"))')"
triton_stamp="pytriton=$PYTRITON_VER python=$PYVER src=$TRITON_SRC"
if [[ -x "$TRITON/bin/tritonserver" && -x "$TRITON/backends/python/triton_python_backend_stub" \
      && -f "$TRITON/.prepared" && "$(cat "$TRITON/.prepared")" == "$triton_stamp" ]]; then
    log "triton: $TRITON prepared (nvidia-pytriton $PYTRITON_VER, stub $PYVER)"
else
    stub="$TRITON_SRC/python_backend_stubs/$PYVER/triton_python_backend_stub"
    [[ -f "$stub" ]] || die "no python backend stub for Python $PYVER in $TRITON_SRC"
    log "triton: preparing $TRITON (nvidia-pytriton $PYTRITON_VER, stub $PYVER)"
    tmp="$CACHE/triton.tmp.$$"
    rm -rf "$tmp"
    cp -r "$TRITON_SRC" "$tmp"
    rm -rf "$tmp/python_backend_stubs"
    cp "$stub" "$tmp/backends/python/"
    chmod +x "$tmp/bin/tritonserver" "$tmp/backends/python/triton_python_backend_stub"
    # The libraries stay in site-packages; a link makes the prepared tree self-describing.
    ln -sfn "$SP/nvidia_pytriton.libs" "$tmp/lib"
    echo "$triton_stamp" >"$tmp/.prepared"
    rm -rf "$TRITON"
    mv "$tmp" "$TRITON"
fi
if ! LD_LIBRARY_PATH="$TRITON/lib" ldd "$TRITON/bin/tritonserver" >/dev/null 2>&1 \
    || LD_LIBRARY_PATH="$TRITON/lib" ldd "$TRITON/bin/tritonserver" | grep -q 'not found'; then
    die "tritonserver has unresolved libraries: $(LD_LIBRARY_PATH="$TRITON/lib" ldd "$TRITON/bin/tritonserver" | grep 'not found' | tr '\n' ' ')"
fi
if LD_LIBRARY_PATH="$TRITON/lib" ldd "$TRITON/backends/python/triton_python_backend_stub" | grep -q 'not found'; then
    die "python backend stub has unresolved libraries (is libpython$PYVER installed?)"
fi

# ---------------------------------------------------------------------------------------------
# 4b. The other Triton builds the agent is tested on (scripts/triton-versions.env), each from
#     its own nvidia-pytriton wheel, downloaded with pip (no install: the venv keeps the pinned
#     one), unpacked into .cache/triton-<major.minor> with the same layout as .cache/triton:
#     bin/ backends/ caches/ lib/ (the wheel's nvidia_pytriton.libs, a real copy here) and the
#     python stub for this Python in backends/python/. The wheel is deleted afterwards.
# ---------------------------------------------------------------------------------------------
# shellcheck source=triton-versions.env
source "$REPO/scripts/triton-versions.env"
for build in $TRITON_BUILDS; do
    tv="${build%%=*}" pv="${build#*=}"
    [[ "$pv" == "$PYTRITON_VER" ]] && continue   # that one is .cache/triton (from the venv)
    dir="$CACHE/triton-${tv%.*}"
    stamp_v="triton=$tv pytriton=$pv python=$PYVER"
    if [[ -x "$dir/bin/tritonserver" && -x "$dir/backends/python/triton_python_backend_stub" \
          && -f "$dir/.prepared" && "$(cat "$dir/.prepared")" == "$stamp_v" ]]; then
        log "triton $tv: $dir prepared (nvidia-pytriton $pv, stub $PYVER)"
        continue
    fi
    log "triton $tv: downloading nvidia-pytriton $pv into $dir"
    tmp="$dir.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp/wheel"
    quiet "$PY" -m pip download -q --no-deps --only-binary=:all: "nvidia-pytriton==$pv" -d "$tmp/wheel"
    # Only the server tree and its libraries; file modes from the zip (zipfile drops them).
    "$PY" - "$tmp/wheel" "$tmp/x" <<'EOF'
import os, pathlib, sys, zipfile
(whl,) = pathlib.Path(sys.argv[1]).glob("nvidia_pytriton-*.whl")
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        if info.filename.startswith(("pytriton/tritonserver/", "nvidia_pytriton.libs/")):
            path = z.extract(info, sys.argv[2])
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                os.chmod(path, mode)
EOF
    stub="$tmp/x/pytriton/tritonserver/python_backend_stubs/$PYVER/triton_python_backend_stub"
    if [[ ! -f "$stub" ]]; then
        log "triton $tv: SKIPPED, nvidia-pytriton $pv has no python backend stub for Python $PYVER" \
            "(has: $(ls "$tmp/x/pytriton/tritonserver/python_backend_stubs" 2>/dev/null | tr '\n' ' '))"
        rm -rf "$tmp"
        continue
    fi
    mv "$tmp/x/pytriton/tritonserver" "$tmp/tree"
    mv "$tmp/x/nvidia_pytriton.libs" "$tmp/tree/lib"   # tritonserver's RPATH has $ORIGIN/../lib
    cp "$tmp/tree/python_backend_stubs/$PYVER/triton_python_backend_stub" "$tmp/tree/backends/python/"
    rm -rf "$tmp/tree/python_backend_stubs"
    chmod +x "$tmp/tree/bin/tritonserver" "$tmp/tree/backends/python/triton_python_backend_stub"
    for exe in bin/tritonserver backends/python/triton_python_backend_stub; do
        if LD_LIBRARY_PATH="$tmp/tree/lib" ldd "$tmp/tree/$exe" | grep -q 'not found'; then
            die "triton $tv: $exe has unresolved libraries: $(LD_LIBRARY_PATH="$tmp/tree/lib" ldd "$tmp/tree/$exe" | grep 'not found' | tr '\n' ' ')"
        fi
    done
    echo "$stamp_v" >"$tmp/tree/.prepared"
    rm -rf "$dir"
    mv "$tmp/tree" "$dir"
    rm -rf "$tmp"
done

# ---------------------------------------------------------------------------------------------
# 5. The real Dragonfly scheduler + dfdaemon, once per machine, outside the checkout
# ---------------------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [[ ! -x "$HOME/.cargo/bin/cargo" ]]; then
    die "cargo not found: the real dfdaemon is built from crates.io (install Rust with rustup)"
fi
command -v go >/dev/null 2>&1 || [[ -x /usr/local/go/bin/go ]] || die "go not found: the scheduler is built from the Go module proxy"
log "dragonfly: scripts/build-dragonfly.sh (a fresh machine builds dfdaemon: ~45 min on 2 cores)"
DRAGONFLY_BIN="$(bash "$REPO/scripts/build-dragonfly.sh")" || die "building the real Dragonfly failed (see the log above)"

log "done: venv=$VENV triton=$TRITON azurite=$CACHE/npm/node_modules/.bin/azurite-blob dragonfly=$DRAGONFLY_BIN"
