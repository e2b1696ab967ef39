#!/usr/bin/env bash
# The local proof of `flushctl durability` (issue 12, item 5): for each pattern, mount the
# crash model (crashfs: data is durable only after fsync / fdatasync / an O_DSYNC write),
# write records with a local witness outside the mount, crash the file system (after all
# acknowledgements; mid-stream; and after all acknowledgements with torn writes, where
# each unsynced 4 KiB page keeps a random prefix of its 512-byte sectors), verify, and
# print a table.
#
# Exits 0 only if write-through and flush lose 0 acknowledged records in every case and
# plain (the negative control) loses some in every case, torn ones in the torn case.
# Needs root and /dev/fuse (Linux).
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "durability-local-e2e: needs root (FUSE mount)" >&2; exit 1; }
[ -c /dev/fuse ] || { echo "durability-local-e2e: /dev/fuse is missing" >&2; exit 1; }

cargo build --quiet -p flushctl -p flushguard-crashfs
bin="${CARGO_TARGET_DIR:-target}/debug"
flushctl="$bin/flushctl"
crashfs="$bin/crashfs"

die() { echo "durability-local-e2e: $*" >&2; exit 1; }
# shellcheck source=scripts/crash-model.sh
. scripts/crash-model.sh
trap cleanup_model EXIT

rows=()
fail=0
for pattern in write-through flush plain; do
    for when in after-acks mid-stream torn; do
        mount_model
        witness="$work/$pattern-$when.fgw"
        target="$mnt/target.dat"
        if [ "$when" != mid-stream ]; then
            "$flushctl" durability run --target "$target" --witness "$witness" \
                --records 200 --threads 2 --pattern "$pattern" --no-progress >/dev/null
        else
            "$flushctl" durability run --target "$target" --witness "$witness" \
                --duration 60s --threads 2 --pattern "$pattern" --no-progress \
                >/dev/null 2>"$work/run.err" &
            run_pid=$!
            # Crash once at least 100 acknowledgements are in the witness (40-byte entries).
            for _ in $(seq 200); do
                [ "$(stat -c %s "$witness" 2>/dev/null || echo 0)" -ge $((40 * 101)) ] && break
                sleep 0.05
            done
        fi
        if [ "$when" = torn ]; then echo crash-torn >"$mnt/.crashfs"; else echo crash >"$mnt/.crashfs"; fi
        if [ "$when" = mid-stream ]; then
            # The writers now fail with EIO (the dead disk) and stop.
            wait "$run_pid" && run_rc=0 || run_rc=$?
            [ "$run_rc" -ne 0 ] || { echo "mid-stream run did not notice the crash" >&2; fail=1; }
        fi
        dropped="$(awk '/^dropped_pages/ {print $2}' "$mnt/.crashfs")"
        json="$("$flushctl" --json durability verify --target "$target" --witness "$witness")" \
            && verify_rc=0 || verify_rc=$?
        acked="$(sum acknowledged "$json")"
        lost="$(sum lost "$json")"
        torn="$(sum torn "$json")"
        unmount_model
        expect="0 lost"
        ok=yes
        if [ "$pattern" = plain ]; then
            expect="some lost"
            { [ "$lost" -gt 0 ] && [ "$verify_rc" -eq 8 ]; } || ok=NO
            if [ "$when" = torn ]; then
                expect="some torn"
                [ "$torn" -gt 0 ] || ok=NO
            fi
        else
            { [ "$lost" -eq 0 ] && [ "$verify_rc" -eq 0 ] && [ "$acked" -gt 0 ]; } || ok=NO
        fi
        [ "$ok" = yes ] || fail=1
        rows+=("$(printf '%-14s %-11s %12s %6s %6s %14s %8s %-10s %s' \
            "$pattern" "$when" "$acked" "$lost" "$torn" "$dropped" "$verify_rc" "$expect" "$ok")")
    done
done

printf '\n%-14s %-11s %12s %6s %6s %14s %8s %-10s %s\n' \
    pattern crash acknowledged lost torn "dropped pages" "verify" expected ok
printf '%s\n' "${rows[@]}"
if [ "$fail" -ne 0 ]; then
    echo "durability-local-e2e: FAILED" >&2
    exit 1
fi
echo "durability-local-e2e: write-through and flush lost nothing acknowledged; plain lost records (negative control)"
