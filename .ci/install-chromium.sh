#!/usr/bin/env bash
# Debian's Chromium for the dashboard's browser tests (Playwright drives it via executable_path).
# Idempotent; never runs `playwright install` (that downloads a browser build, which fails here).
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
