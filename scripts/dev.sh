#!/usr/bin/env bash
# The whole API on http://localhost:8001, in one command:
#   DynamoDB Local (data kept in .local/dynamodb) with the table of template.yaml,
#   a local RunPod endpoint unless RUNPOD_API_KEY and RUNPOD_ENDPOINT_ID (or
#   RUNPOD_MODELS, the catalogue) are set; the local endpoint serves every
#   endpoint id of RUNPOD_MODELS,
#   and `cargo lambda watch` serving the three functions under their real paths.
# Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

PORT=${PORT:-8001}
DYNAMODB_PORT=${DYNAMODB_PORT:-8000}
RUNPOD_LOCAL_PORT=${RUNPOD_LOCAL_PORT:-8002}

ensure_dynamodb_local
ensure_cargo_lambda
trap stop_started EXIT
trap 'exit 130' INT TERM

echo "building the dev tools..." >&2
cargo build -q --bin create-table --bin runpod-local --bin mint-token

start_dynamodb_local "$DYNAMODB_PORT" .local/dynamodb.log .local/dynamodb
export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$DYNAMODB_PORT"
export AWS_REGION=${AWS_REGION:-us-east-1} AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local
export AWS_EC2_METADATA_DISABLED=true
export TABLE_NAME=${TABLE_NAME:-chat-local}
target/debug/create-table

export JWT_SECRET=${JWT_SECRET:-local-development-secret-do-not-deploy}
export SIGNING_SECRET=${SIGNING_SECRET:-local-signing-secret-do-not-deploy}
# The local RunPod endpoint delivers finished jobs here (a real RunPod
# cannot reach localhost: with real credentials, pending replies complete on read).
REAL_RUNPOD=
if [ -n "${RUNPOD_API_KEY:-}" ] && [ -n "${RUNPOD_ENDPOINT_ID:-}${RUNPOD_MODELS:-}" ]; then
  REAL_RUNPOD=1
fi
if [ -z "$REAL_RUNPOD" ]; then
  export WEBHOOK_BASE_URL=${WEBHOOK_BASE_URL:-http://127.0.0.1:$PORT/api/chat/runpod/webhook}
fi
if [ -n "$REAL_RUNPOD" ]; then
  echo "using the real RunPod endpoint(s) ${RUNPOD_ENDPOINT_ID:-of RUNPOD_MODELS}" >&2
else
  export RUNPOD_API_KEY=local-runpod-key RUNPOD_ENDPOINT_ID=local-endpoint
  export RUNPOD_BASE_URL="http://127.0.0.1:$RUNPOD_LOCAL_PORT"
  RUNPOD_LOCAL_PORT=$RUNPOD_LOCAL_PORT target/debug/runpod-local 2>.local/runpod-local.log &
  STARTED_PIDS+=($!)
  wait_for_port "$RUNPOD_LOCAL_PORT" "the local RunPod endpoint" 30
fi

# A day's token for the local user alice, in the link's fragment (which the
# browser never sends to a server; the page keeps it in sessionStorage).
CHAT_TOKEN=$(target/debug/mint-token alice)
cat >&2 <<MSG

  Chat page:  http://localhost:$PORT/chat#token=$CHAT_TOKEN
              (signed in as the local user alice; functions compile on their first request)
  Chat API:   http://localhost:$PORT  (reference: http://localhost:$PORT/docs)
  A token for local calls:
    TOKEN=\$(cargo run -q --bin mint-token -- alice)
    curl -s localhost:$PORT/api/chat/send -H "authorization: Bearer \$TOKEN" \\
         -H 'content-type: application/json' -d '{"message": "How do I organize patient files?"}'
  Ctrl-C stops everything.

MSG
cargo lambda watch -P "$PORT" &
STARTED_PIDS+=($!)
wait "${STARTED_PIDS[-1]}"
