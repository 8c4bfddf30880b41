#!/usr/bin/env bash
# Makes sure the browser the console's browser tests drive (tests/browser/) is installed: Debian's Chromium at
# /usr/bin/chromium. Installed with apt where missing and we are root; never a browser download by a test tool
# (`playwright install` cannot work on a closed network). The Python `playwright` package from requirements.txt
# carries its own driver and launches this Chromium through `executable_path`.
set -uo pipefail

CHROMIUM=${INFERIA_CHROMIUM:-/usr/bin/chromium}

say() { echo "[browser] $*"; }
die() { echo "[browser] ERROR: $*" >&2; exit 1; }

chromium_works() { [ -x "$CHROMIUM" ] && "$CHROMIUM" --version >/dev/null 2>&1; }

if ! chromium_works; then
  [ "$(id -u)" = 0 ] || die "$CHROMIUM is missing; install Debian's chromium package (sudo apt-get install chromium) or set INFERIA_CHROMIUM, or skip the browser tests with PYTEST_ARGS='--ignore=tests/browser'"
  command -v apt-get >/dev/null 2>&1 || die "$CHROMIUM is missing and apt-get is not available to install it"
  say "installing chromium with apt"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1 \
    || die "apt-get install chromium failed"
  chromium_works || die "chromium was installed but $CHROMIUM --version fails"
fi
say "$("$CHROMIUM" --version 2>/dev/null)"
