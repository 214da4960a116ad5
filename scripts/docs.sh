#!/usr/bin/env bash
# Builds docs/api.html, the self-contained API reference page, from
# openapi.yaml (Redoc, its script inlined: the page loads nothing from a CDN,
# and sends no telemetry). Run after every change to openapi.yaml; the drift
# test (tests/integration/openapi.rs) fails until you do.
#   scripts/docs.sh [OUT (docs/api.html)]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x node_modules/.bin/redocly ] || npm ci --no-audit --no-fund --loglevel=error
REDOCLY_TELEMETRY=off node_modules/.bin/redocly build-docs openapi.yaml \
  --inlineBundle --openapi.disableTelemetry --title "Chat Service API" \
  -o "${1:-docs/api.html}" 2>&1 | grep -v '^ *[║╔╚]' >&2
