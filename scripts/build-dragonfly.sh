#!/usr/bin/env bash
# Build the real Dragonfly scheduler and peer daemon once per machine, outside the checkout.
#
#   scripts/build-dragonfly.sh          # build what is missing, print the bin directory
#
# Versions come from scripts/dragonfly-versions.env. The result lives in
#   ${DFREPO_DRAGONFLY_HOME:-$HOME/.cache/dfrepo/dragonfly-<client>-<scheduler>}/bin
# and is reused by every clone on this machine (CI runs in a fresh clone on the same machine).
# A fresh machine builds it: dfdaemon is a large Rust build (RocksDB, aws-lc, jemalloc from C/C++
# source); see README "Real Dragonfly" for the measured time, memory and disk.
# Needs the Debian build deps (protobuf-compiler libprotobuf-dev libclang-dev pkg-config clang);
# scripts/bootstrap.sh installs them.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=dragonfly-versions.env
source "$REPO/scripts/dragonfly-versions.env"
HOME_DIR="${DFREPO_DRAGONFLY_HOME:-$HOME/.cache/dfrepo/dragonfly-${DRAGONFLY_CLIENT_VERSION}-${DRAGONFLY_SCHEDULER_VERSION}}"
BIN="$HOME_DIR/bin"
LOGS="$HOME_DIR/build-logs"
mkdir -p "$BIN" "$LOGS"
log() { printf '[build-dragonfly] %s\n' "$*" >&2; }

# Only one build at a time per machine (a test run and a session may both ask).
exec 9>"$HOME_DIR/.lock"
flock 9

export PATH="$HOME/.cargo/bin:/usr/local/go/bin:$PATH"
# Peak memory and CPU of each build go to its log (the README quotes them).
TIME=(); [[ -x /usr/bin/time ]] && TIME=(/usr/bin/time -v)

if [[ -x "$BIN/scheduler" && -f "$HOME_DIR/.scheduler.done" ]]; then
    log "scheduler $DRAGONFLY_SCHEDULER_VERSION present"
else
    log "scheduler: go install d7y.io/dragonfly/v2/cmd/scheduler@$DRAGONFLY_SCHEDULER_VERSION"
    start=$(date +%s)
    # `go install mod@version` first asks the proxy for the module's version list (deprecation
    # check); proxies that serve only pinned versions refuse that list. Download the pinned module
    # zip instead and build its cmd/scheduler with the module as main module: same sources, same
    # go.sum, same result as go install.
    {
        src="$(go mod download -json "d7y.io/dragonfly/v2@$DRAGONFLY_SCHEDULER_VERSION" \
               | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
        [[ -d "$src" ]] || { echo "module download failed"; exit 1; }
        cd "$src"
        CGO_ENABLED=0 GOFLAGS=-mod=readonly "${TIME[@]}" go build -trimpath \
            -o "$BIN/scheduler" ./cmd/scheduler
    } >"$LOGS/scheduler.log" 2>&1 || { tail -40 "$LOGS/scheduler.log" >&2; exit 1; }
    echo "seconds=$(( $(date +%s) - start ))" >"$HOME_DIR/.scheduler.done"
fi

if [[ -x "$BIN/dfdaemon" && -x "$BIN/dfget" && -f "$HOME_DIR/.client.done" ]]; then
    log "dfdaemon $DRAGONFLY_CLIENT_VERSION present"
else
    log "dfdaemon: cargo install --locked dragonfly-client@$DRAGONFLY_CLIENT_VERSION (long: tens of minutes)"
    start=$(date +%s)
    # What upstream's release build sets and `cargo install` would not read from the workspace.
    RUSTFLAGS="--cfg tokio_unstable" \
    CARGO_TARGET_DIR="$HOME_DIR/target" \
    CARGO_PROFILE_RELEASE_PANIC=abort \
    CARGO_PROFILE_RELEASE_DEBUG=false \
    "${TIME[@]}" cargo install --locked "dragonfly-client@$DRAGONFLY_CLIENT_VERSION" \
        --bin dfdaemon --bin dfget --root "$HOME_DIR" >"$LOGS/client.log" 2>&1 &
    cargo_pid=$!
    # Visible progress: crates compiled so far, every 30 s (about 660 in all).
    while kill -0 "$cargo_pid" 2>/dev/null; do
        sleep 30
        kill -0 "$cargo_pid" 2>/dev/null || break
        log "dfdaemon: $(grep -c '^ *Compiling' "$LOGS/client.log" || true) crates compiled, $(( $(date +%s) - start )) s"
    done
    wait "$cargo_pid" || { tail -60 "$LOGS/client.log" >&2; exit 1; }
    echo "seconds=$(( $(date +%s) - start ))" >"$HOME_DIR/.client.done"
    du -sh "$HOME_DIR/target" >>"$HOME_DIR/.client.done" 2>/dev/null || true
    rm -rf "$HOME_DIR/target"   # 5+ GB of intermediates; the binaries are installed
fi
echo "$BIN"
