#!/usr/bin/env bash
# Installs everything FlushGuard's build and tests need on a Debian machine with rustup.
# Idempotent: installs only what is missing, and runs `apt-get update` only when a Debian
# package has to be installed. Never skips a missing tool: it installs it or fails.
#
#   rustup targets  x86_64-pc-windows-msvc (flushguard.sys), x86_64-pc-windows-gnu (flushctl.exe)
#   rustup parts    rustfmt, clippy
#   Debian          clang (SEH shim, harness), lld + llvm (llvm-lib, llvm-dlltool,
#                   llvm-readobj), osslsigncode + openssl (test signing), mingw-w64
#                   (flushctl.exe), wine + wine64 (SEH shim test), fio (outside anchor of
#                   the group-commit benchmark, engine/benches/group_commit.rs)
set -euo pipefail

say() { printf '==> setup: %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
command -v rustup >/dev/null 2>&1 || { echo "setup: rustup is required (https://rustup.rs)" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# --- Rust targets and components -------------------------------------------------------
installed_targets="$(rustup target list --installed)"
for target in x86_64-pc-windows-msvc x86_64-pc-windows-gnu; do
    if grep -qx "$target" <<<"$installed_targets"; then
        say "rustup target $target: present"
    else
        say "rustup target add $target"
        rustup target add "$target"
    fi
done
installed_components="$(rustup component list --installed)"
for component in rustfmt clippy; do
    if grep -q "^$component" <<<"$installed_components"; then
        say "rustup component $component: present"
    else
        say "rustup component add $component"
        rustup component add "$component"
    fi
done

# --- Debian packages ---------------------------------------------------------------------
packages=(clang lld llvm osslsigncode openssl mingw-w64 wine wine64 fio)
missing=()
for package in "${packages[@]}"; do
    if dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        say "package $package: present"
    else
        missing+=("$package")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "apt-get update; apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# --- Every tool the pipeline calls must now exist ------------------------------------------
for tool in clang llvm-lib llvm-dlltool llvm-readobj osslsigncode openssl \
            x86_64-w64-mingw32-gcc wine fio; do
    command -v "$tool" >/dev/null 2>&1 || { echo "setup: $tool is still missing" >&2; exit 1; }
done
rust_lld="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/rust-lld"
[ -x "$rust_lld" ] || { echo "setup: rust-lld not found at $rust_lld" >&2; exit 1; }
say "all prerequisites present"
