#!/usr/bin/env bash
# FlushGuard's full test command (README, second command; .ci/run calls it):
# prerequisites, formatting, lints for the host and the Windows driver target, every
# workspace test, the local durability proof (scripts/durability-local-e2e.sh: crash
# model, needs root and /dev/fuse), the SMB durability proof (scripts/durability-e2e.sh:
# Samba over the crash model, wire bits from a capture), the main job (scripts/run.sh: the
# packaged and test-signed driver with its PE gate, then the replay of the generated
# sample), the packaged driver executed in a test process (cargo xtask sys-test), and the
# SEH copy shim under wine. Stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
started=$SECONDS

step "setup: install missing prerequisites (scripts/setup.sh)"
bash scripts/setup.sh
if ! command -v cargo >/dev/null 2>&1; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

step "format: cargo fmt --all -- --check (rustfmt, every workspace crate)"
cargo fmt --all -- --check

step "lint host: cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# Two invocations: in one, cargo would unify the engine's features across the driver
# (no_std) and flushctl (std), and the driver would link std.
step "lint Windows driver: cargo clippy --target x86_64-pc-windows-msvc -p flushguard -p flushguard-ntoskrnl-imports -- -D warnings"
cargo clippy --target x86_64-pc-windows-msvc \
    -p flushguard -p flushguard-ntoskrnl-imports -- -D warnings

step "lint Windows CLI: cargo clippy --target x86_64-pc-windows-msvc -p flushctl -- -D warnings (lib and binaries; tests run on the host)"
cargo clippy --target x86_64-pc-windows-msvc -p flushctl -- -D warnings

step "test: cargo test --workspace (unit, integration: fake Filter Manager, CLI, wire vectors, INF consistency, PE gate)"
cargo test --workspace

step "durability proof: scripts/durability-local-e2e.sh (crashfs crash model; write-through and flush lose 0 acknowledged records, plain loses some)"
bash scripts/durability-local-e2e.sh

step "SMB durability proof: scripts/durability-e2e.sh (Samba on 127.0.0.1 over crashfs; write-through, create-write-through and flush lose 0 acknowledged records, plain loses some, strict sync = no is caught; encryption required by server or share: sealed on the wire, 0 lost; wire bits checked in a capture)"
bash scripts/durability-e2e.sh

step "main job: scripts/run.sh (README's first command: package with PE gate, SEH unwind check, test signing + verify, flushctl.exe; then replay of the generated sample)"
bash scripts/run.sh

step "the shipped binary executed: cargo xtask sys-test (target/package/flushguard.sys at a non-preferred base, imports bound to an ABI-level ntoskrnl/fltmgr; every scenario, leak report, compared with the host fake)"
cargo xtask sys-test

step "SEH shim under wine: cargo xtask seh-test (the driver's seh_shim.lib in a console program)"
cargo xtask seh-test

step "fuzz targets: cargo +nightly check --manifest-path fuzz/Cargo.toml --bins (decode, handle; cargo-fuzz layout, nightly only)"
if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
cargo +nightly check --manifest-path fuzz/Cargo.toml --bins

step "all steps passed in $((SECONDS - started)) s"
