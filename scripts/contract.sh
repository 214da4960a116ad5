#!/usr/bin/env bash
# Holds the service to its contract, openapi.yaml, against a running stack
# (scripts/test.sh starts one and calls this; or point it at scripts/dev.sh):
#  1. the document lints clean (Redocly, recommended rules);
#  2. docs/api.html is the page scripts/docs.sh builds from it (not stale);
#  3. Schemathesis: every operation, generated valid and invalid requests,
#     all its checks, and the stateful run that follows the document's links;
#  4. the reference page at /docs renders every operation in headless Chromium.
#   scripts/contract.sh API_URL        (needs JWT_SECRET of that stack)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
api=${1:?usage: scripts/contract.sh API_URL}
ensure_contract_tools
export REDOCLY_TELEMETRY=off

echo "== contract: lint" >&2
node_modules/.bin/redocly lint openapi.yaml 2>&1 | grep -v '^ *[║╔╚]' >&2

echo "== contract: docs/api.html is built from openapi.yaml" >&2
check_built docs/api.html scripts/docs.sh

echo "== contract: Schemathesis against $api" >&2
export CHAT_API_URL=$api
CHAT_TOKEN=$(target/debug/mint-token schemathesis-"$(date +%s)")
export CHAT_TOKEN
rm -rf .local/schemathesis
# A fresh seed each run (SCHEMATHESIS_SEED replays one), printed first.
seed=${SCHEMATHESIS_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "== contract: Schemathesis seed $seed (SCHEMATHESIS_SEED=$seed replays this run)" >&2
SCHEMATHESIS_HOOKS=tests.contract.hooks st --config-file tests/contract/schemathesis.toml \
  run openapi.yaml --no-color --seed "$seed" --report junit --report-dir .local/schemathesis

echo "== contract: the docs page in Chromium" >&2
node tests/contract/docs_page.mjs "$api" .local/docs-page.png
