#!/usr/bin/env bash
# The one test command of Drawbridge.
#
#   scripts/test.sh            build everything, run every test
#   scripts/test.sh FILTER     run only the tests whose name contains FILTER
#
# Works on a fresh Debian machine with Rust installed, as root or not. It
# installs Debian packages only when something it needs is missing (using sudo
# when not root), keeps Python venvs in .venv-tests/ (the Python MCP client)
# and .venv-sqlite/ (the reference mcp-server-sqlite, which needs mcp<2) and
# tests/node/node_modules (the TypeScript MCP SDK and mcp-remote, npm ci),
# builds the binaries the end-to-end tests start, and runs the
# tests with cargo-nextest if it is installed, else with cargo test.
# Exits non-zero when anything fails.

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv-tests"
REQUIREMENTS="$ROOT/tests/requirements.txt"
SQLITE_VENV="$ROOT/.venv-sqlite"
SQLITE_REQUIREMENTS="$ROOT/tests/requirements-sqlite.txt"

section() {
    printf '\n==> %s\n' "$*"
}

die() {
    printf 'scripts/test.sh: %s\n' "$*" >&2
    exit 1
}

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run '$*' (not root, and sudo is not installed)"
    fi
}

# ---------------------------------------------------------------------------
# Debian packages. Add a package to the list below when the tests start to
# need one; it is installed only when `dpkg -s` says it is missing.
# ---------------------------------------------------------------------------
ensure_debian_packages() {
    local wanted=()
    # python3-venv: only when the tests need a venv and this python3 cannot
    # make one (Debian splits venv/ensurepip out of python3).
    if { [ -f "$REQUIREMENTS" ] || [ -f "$SQLITE_REQUIREMENTS" ]; } && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        wanted+=(python3-venv)
    fi
    # pebble: the ACME test server the relay's ACME test obtains certificates
    # from (tests/src/pebble.rs).
    if ! command -v pebble >/dev/null 2>&1; then
        wanted+=(pebble)
    fi
    # chromium, chromium-driver: the headless browser (and its WebDriver
    # server, chromedriver) that drives the sign-in and consent pages
    # (tests/src/chromium.rs). About 90 MB to download, some 30 s to install.
    if ! command -v chromium >/dev/null 2>&1; then
        wanted+=(chromium)
    fi
    # nodejs, npm: the npm clients in tests/node (TypeScript SDK, mcp-remote).
    if ! command -v node >/dev/null 2>&1; then
        wanted+=(nodejs)
    fi
    if ! command -v npm >/dev/null 2>&1; then
        wanted+=(npm)
    fi
    if ! command -v chromedriver >/dev/null 2>&1; then
        wanted+=(chromium-driver)
    fi
    # tmux: a terminal for `agent connect --view tui` whose screen the test
    # reads (tests/tests/e2e/inspector.rs).
    if ! command -v tmux >/dev/null 2>&1; then
        wanted+=(tmux)
    fi
    # postgresql: initdb, postgres and pg_isready for the throwaway server of
    # the PostgreSQL backend's tests and the cluster e2e tests (tests/src/postgres.rs; Debian
    # keeps them in /usr/lib/postgresql/N/bin, off PATH).
    if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && ! command -v initdb >/dev/null 2>&1; then
        wanted+=(postgresql)
    fi
    if [ ${#wanted[@]} -eq 0 ]; then
        echo "nothing needed"
        return 0
    fi
    if ! command -v dpkg >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
        die "missing packages (${wanted[*]}) and this is not a Debian system; install their equivalents by hand"
    fi
    local missing=() pkg
    for pkg in "${wanted[@]}"; do
        if ! dpkg -s "$pkg" >/dev/null 2>&1; then
            missing+=("$pkg")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        echo "all installed: ${wanted[*]}"
        return 0
    fi
    echo "installing: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Creates or updates the venv $1 from the requirements file $2 (reinstalling
# only when the file changed).
make_venv() {
    local venv=$1 requirements=$2
    command -v python3 >/dev/null 2>&1 || die "$requirements exists but python3 is not installed"
    if [ ! -x "$venv/bin/python" ]; then
        echo "creating $venv"
        python3 -m venv "$venv"
    fi
    local stamp="$venv/.requirements.sha256" want have=""
    want=$(sha256sum "$requirements" | cut -d' ' -f1)
    [ -f "$stamp" ] && have=$(cat "$stamp")
    if [ "$want" != "$have" ]; then
        echo "installing $requirements into $venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
        echo "$want" >"$stamp"
    else
        echo "$venv up to date"
    fi
}

# .venv-tests/ from tests/requirements.txt, first on PATH for the tests; and
# .venv-sqlite/ from tests/requirements-sqlite.txt, which the stdio bridge's
# tests find through DRAWBRIDGE_SQLITE_VENV (kept off PATH: it has mcp 1.x).
ensure_python_venv() {
    if [ ! -f "$REQUIREMENTS" ]; then
        echo "no tests/requirements.txt; skipped"
    else
        make_venv "$VENV" "$REQUIREMENTS"
        export VIRTUAL_ENV="$VENV"
        export PATH="$VENV/bin:$PATH"
    fi
    if [ -f "$SQLITE_REQUIREMENTS" ]; then
        make_venv "$SQLITE_VENV" "$SQLITE_REQUIREMENTS"
        export DRAWBRIDGE_SQLITE_VENV="$SQLITE_VENV"
    fi
}

# tests/node/node_modules from tests/node/package-lock.json (npm ci; again
# only when the lock file changed): the TypeScript MCP SDK and mcp-remote.
ensure_node_modules() {
    local dir="$ROOT/tests/node"
    [ -f "$dir/package-lock.json" ] || { echo "no tests/node/package-lock.json; skipped"; return 0; }
    local stamp="$dir/node_modules/.lock.sha256" want have=""
    want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
    [ -f "$stamp" ] && have=$(cat "$stamp")
    if [ "$want" != "$have" ]; then
        echo "installing tests/node (npm ci)"
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
        echo "$want" >"$stamp"
    else
        echo "tests/node/node_modules up to date"
    fi
}

section "toolchain"
command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust from https://rustup.rs"
cargo --version

section "debian packages"
ensure_debian_packages

section "python venvs (.venv-tests, .venv-sqlite)"
ensure_python_venv

section "npm clients (tests/node: TypeScript MCP SDK, mcp-remote)"
ensure_node_modules

section "format and lints (cargo fmt --check, cargo clippy -D warnings)"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

# The folders of relay/src and agent/src are layers: none may import a folder
# that imports it back.
section "import cycles between folders (scripts/folder_cycles.py)"
python3 scripts/folder_cycles.py agent/src
python3 scripts/folder_cycles.py relay/src

# The agent crate without its default feature `embedded-relay` (the relay
# run in-process by `agent connect` without --relay) must not link the relay
# crate or its store, and must build and pass clippy that way.
section "the agent without the embedded relay (cargo clippy -p drawbridge-agent --no-default-features)"
agent_deps=$(cargo tree -p drawbridge-agent --no-default-features --edges normal,build --prefix none)
if grep -Eq '^drawbridge-(relay|store) ' <<<"$agent_deps"; then
    die "drawbridge-agent without default features depends on drawbridge-relay or drawbridge-store"
fi
cargo clippy -p drawbridge-agent --no-default-features -- -D warnings

# --tests: the binaries are built with the same features as the tests (dev-
# dependencies switch features on), so the test run below reuses every crate
# instead of compiling a second copy of the dependency tree.
section "build (cargo build --workspace --bins --tests)"
cargo build --workspace --bins --tests

if cargo nextest --version >/dev/null 2>&1; then
    section "tests (cargo nextest run --workspace --no-fail-fast --retries 1; a retried pass is reported as FLAKY)"
    cargo nextest run --workspace --no-fail-fast --retries 1 "$@"
else
    section "tests (cargo test --workspace --no-fail-fast; install cargo-nextest for faster runs)"
    cargo test --workspace --no-fail-fast "$@"
fi

section "all tests passed"
