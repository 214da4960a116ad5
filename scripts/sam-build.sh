#!/usr/bin/env bash
# `sam build` of every function of template.yaml as a deployment builds it
# (cargo lambda build --release for arm64, through SAM's rust-cargolambda
# build method), then checks that each function got an arm64 Linux
# bootstrap. What `sam deploy` would upload, minus the upload.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_cargo_lambda
command -v sam >/dev/null || python3 -m pip install --quiet "$(grep -E "^aws-sam-cli==" requirements-dev.txt | cut -d" " -f1)"
# cargo-lambda cross-compiles with zig (installed with it from PyPI); the
# standard library for the target comes from rustup.
rustup target add aarch64-unknown-linux-gnu >/dev/null
export SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
started=$(date +%s)
sam build
echo "sam build: $(( $(date +%s) - started )) s" >&2
python3 - <<'PY'
import struct, sys
from pathlib import Path
from samtranslator.yaml_helper import yaml_parse

template = yaml_parse(Path("template.yaml").read_text())
functions = [n for n, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"]
bad = []
for name in functions:
    boot = Path(".aws-sam/build") / name / "bootstrap"
    if not boot.is_file():
        bad.append(f"{name}: no {boot}")
        continue
    head = boot.read_bytes()[:20]
    # ELF, 64-bit, little endian, e_machine 0xB7 (AArch64).
    if head[:4] != b"\x7fELF" or head[4] != 2 or struct.unpack("<H", head[18:20])[0] != 0xB7:
        bad.append(f"{name}: {boot} is not an arm64 Linux executable")
    else:
        print(f"{name}: {boot} ({boot.stat().st_size // 1024} KiB, arm64)")
if bad:
    sys.exit("sam build is incomplete:\n  " + "\n  ".join(bad))
PY
