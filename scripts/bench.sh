#!/usr/bin/env bash
# The benchmark (issue 5): builds the functions' release binaries, starts
# DynamoDB Local, runs src/bin/bench.rs. Prints a table and writes it as JSON.
#   scripts/bench.sh [OUT_JSON (benchmarks/latest.json)] [WARM_INVOCATIONS (2000)]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_dynamodb_local
trap stop_started EXIT
echo "building release binaries (fat LTO: several minutes from cold)..." >&2
cargo build --release -p send-message -p list-conversations -p get-conversation -p stream-message -p list-models \
  -p attach-stream -p message-feedback -p export-conversation -p read-share -p export-all
cargo build --release --bin bench-calls
cargo build --bin bench

port=$(free_port)
start_dynamodb_local "$port" .local/bench-dynamodb.log
export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$port"
export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_EC2_METADATA_DISABLED=true
target/debug/bench "${1:-benchmarks/latest.json}" "${2:-2000}"
