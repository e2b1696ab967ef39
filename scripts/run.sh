#!/usr/bin/env bash
# FlushGuard's main job (README, first command), from a fresh machine:
#   1. installs what is missing (scripts/setup.sh),
#   2. builds the test-signed driver package in target/package/ (cargo xtask package:
#      release flushguard.sys, PE gate, SEH unwind check, signature, INF, flushctl.exe),
#   3. replays a small GENERATED sample workload (flushctl gen-trace: synthetic, every
#      path on the made-up server \\gen-fs01) under examples/replay-sample.toml through
#      the driver's own callback logic, and prints the report.
# Extra arguments go to that replay, e.g. `bash scripts/run.sh --json`.
# Any Process Monitor CSV export replays the same way:
#   cargo run -q -p flushctl -- replay --trace FILE --policy POLICY.toml [--map Z:=\\srv\share]
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "setup: install missing prerequisites (scripts/setup.sh)"
bash scripts/setup.sh
if ! command -v cargo >/dev/null 2>&1; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

step "package: cargo xtask package (flushguard.sys test-signed, flushguard.inf, certificate, flushctl.exe)"
cargo xtask package

sample=target/sample-trace.generated.csv
mkdir -p target # absent when CARGO_TARGET_DIR points elsewhere
step "sample workload: flushctl gen-trace --out $sample (generated, not a capture)"
cargo run -q -p flushctl -- gen-trace --out "$sample"

step "replay: flushctl replay --trace $sample --policy examples/replay-sample.toml"
cargo run -q -p flushctl -- replay --map 'Z:=\\gen-fs01\home' \
    --trace "$sample" --policy examples/replay-sample.toml "$@"
