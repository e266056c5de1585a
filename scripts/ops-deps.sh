#!/usr/bin/env bash
# What the operations tests need: Debian's prometheus package, which brings `prometheus` (the
# dashboard test scrapes a real collector with it) and `promtool` (checks and unit-tests the
# alert rules in deploy/prometheus/). A no-op when both are on PATH.
set -euo pipefail
if ! command -v prometheus > /dev/null || ! command -v promtool > /dev/null; then
    echo "ops-deps: installing Debian's prometheus (prometheus + promtool)" >&2
    if [[ $(id -u) -ne 0 ]]; then
        echo "ops-deps: prometheus/promtool are missing; run as root or:" \
            "apt-get install -y --no-install-recommends prometheus" >&2
        exit 1
    fi
    apt-get update -q > /dev/null
    # --no-install-recommends: the exporters and web assets it recommends are not needed
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus \
        > /dev/null
fi
