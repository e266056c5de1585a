#!/usr/bin/env bash
# What the browser SDK's tests need: Debian's chromium (the tests drive it over the DevTools
# protocol; no browser is ever downloaded by npm) and sdk-js's dev tools, pinned by its
# package-lock.json (scripts/js-deps.sh, which `make run` uses alone). A no-op when both are there.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium > /dev/null; then
    echo "browser-deps: installing Debian's chromium" >&2
    if [[ $(id -u) -ne 0 ]]; then
        echo "browser-deps: chromium is missing; run as root or: apt-get install -y chromium" >&2
        exit 1
    fi
    apt-get update -q > /dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium > /dev/null
fi
scripts/js-deps.sh
