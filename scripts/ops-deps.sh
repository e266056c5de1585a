#!/usr/bin/env bash
# What the operations tests need, from Debian: the prometheus package, which brings
# `prometheus` (the dashboard test scrapes a real collector with it) and `promtool` (checks and
# unit-tests the alert rules in deploy/prometheus/), and haproxy (the scale-out tests run
# collectors behind it with deploy/haproxy/haproxy.cfg). A no-op when all are on PATH.
set -euo pipefail
# haproxy lives in /usr/sbin, which a non-root PATH may lack
PATH=$PATH:/usr/sbin
missing=()
if ! command -v prometheus > /dev/null || ! command -v promtool > /dev/null; then
    missing+=(prometheus)
fi
if ! command -v haproxy > /dev/null; then
    missing+=(haproxy)
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "ops-deps: installing Debian's ${missing[*]}" >&2
    if [[ $(id -u) -ne 0 ]]; then
        echo "ops-deps: ${missing[*]} missing; run as root or:" \
            "apt-get install -y --no-install-recommends ${missing[*]}" >&2
        exit 1
    fi
    apt-get update -q > /dev/null
    # --no-install-recommends: the exporters, web assets and docs they recommend are not needed
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
        > /dev/null
fi
