#!/usr/bin/env bash
# Installs Debian's chromium (headless browser for tests/test_browser.py) when it is absent.
# Idempotent: does nothing when /usr/bin/chromium already exists. Needs apt-get (root, or sudo).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# No recommends (chromium-sandbox is unused: the test runs with --no-sandbox); one font so text renders.
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
test -x /usr/bin/chromium
