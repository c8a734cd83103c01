#!/usr/bin/env bash
# salvo's developer entry point: sets everything up on a fresh Debian machine, then runs.
#   ./dev.sh demo    set up, then run the demo (the main job)
#   ./dev.sh test    set up, then run the whole test suite (lint included)
#   ./dev.sh setup   set up only
#   ./dev.sh bench   set up, then run the benchmarks in bench/
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
VENV=.venv

# System packages: a C compiler and Python headers (for the Cython extensions) and venv.
system_packages() {
    local need=()
    command -v cc >/dev/null || need+=(gcc libc6-dev)
    "$PY" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        || need+=(python3-dev)
    "$PY" -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
    if [ "${1:-}" = test ]; then
        # A producer written in JavaScript from docs/protocol.md is part of the tests.
        command -v node >/dev/null || need+=(nodejs)
        command -v npm >/dev/null || need+=(npm)
        # Postfix's smtp-sink is a destination in the node's end-to-end tests.
        [ -x /usr/sbin/smtp-sink ] || need+=(postfix)
        # dnsmasq is the DNS server of the MX routing tests (each test runs its own).
        [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq)
        # OpenDKIM signs for the Postfix relay row of `salvo bench --compare`.
        [ -x /usr/sbin/opendkim ] || need+=(opendkim)
        # The dashboard's test drives Debian's Chromium through its chromedriver (Selenium).
        [ -x /usr/bin/chromium ] || need+=(chromium)
        [ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
        # Redis is the shared store of the cluster tests (each test session runs its own).
        [ -x /usr/bin/redis-server ] || need+=(redis-server)
        # `salvo top` is tested in a real terminal.
        command -v tmux >/dev/null || need+=(tmux)
        # SpamAssassin's spamd scores content in the [content] tests (each runs its own).
        [ -x /usr/sbin/spamd ] || need+=(spamd spamassassin)
    fi
    [ ${#need[@]} -eq 0 ] && return 0
    echo "dev.sh: installing Debian packages: ${need[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    # Only smtp-sink is wanted: no Postfix daemon may hold port 25.
    if [[ " ${need[*]} " == *" postfix "* ]]; then
        $sudo postfix stop >/dev/null 2>&1 || true
    fi
    # Nor a dnsmasq daemon on port 53: the tests start their own on high ports.
    if [[ " ${need[*]} " == *" dnsmasq "* ]]; then
        $sudo service dnsmasq stop >/dev/null 2>&1 || true
        $sudo systemctl disable --now dnsmasq >/dev/null 2>&1 || true
    fi
    # Nor a spamd daemon on port 783.
    if [[ " ${need[*]} " == *" spamd "* ]]; then
        $sudo service spamd stop >/dev/null 2>&1 || true
        $sudo systemctl disable --now spamd >/dev/null 2>&1 || true
    fi
    # Nor a Redis daemon on port 6379: the tests start their own on free ports.
    if [[ " ${need[*]} " == *" redis-server "* ]]; then
        $sudo service redis-server stop >/dev/null 2>&1 || true
        $sudo systemctl disable --now redis-server >/dev/null 2>&1 || true
    fi
}

python_packages() {
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    local stamp="$VENV/.salvo-installed"
    # Reinstall (and rebuild the Cython extensions) when the build inputs changed.
    if [ ! -f "$stamp" ] || [ -n "$(find pyproject.toml setup.py ext -newer "$stamp" \( -name '*.pyx' -o -name '*.pxd' -o -name pyproject.toml -o -name setup.py \) 2>/dev/null | head -n 1)" ]; then
        "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
        "$VENV/bin/python" -m pip install -q -e ".[test]"
        touch "$stamp"
    fi
}

setup() {
    system_packages "${1:-}"
    python_packages
}

case "${1:-}" in
    setup) setup test ;;
    demo) setup; shift; exec "$VENV/bin/salvo" demo "$@" ;;
    test)
        setup test
        shift
        "$VENV/bin/ruff" format --check .
        "$VENV/bin/ruff" check .
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    bench) setup; shift; exec "$VENV/bin/python" -m salvo.bench "$@" ;;
    *) echo "usage: ./dev.sh demo|test|setup|bench [args...]" >&2; exit 2 ;;
esac
