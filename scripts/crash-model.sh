# Sourced by scripts/durability-local-e2e.sh and scripts/durability-e2e.sh: the crash
# model (crashfs: data is durable only after fsync / fdatasync / an O_DSYNC write) on a
# FUSE mount under a fresh work directory. Expects `crashfs` (the binary) and `die`
# (report and exit 1) from the sourcing script; sets `work`, `mnt` and `fs_pid`.

work="$(mktemp -d)"
mnt="$work/mnt"
fs_pid=""

# mount_model: a fresh, empty crash model at $mnt (its backing store in $work/backing).
mount_model() {
    rm -rf "$work/backing" "$mnt"
    mkdir -p "$work/backing" "$mnt"
    "$crashfs" "$work/backing" "$mnt" 2>>"$work/crashfs.log" &
    fs_pid=$!
    for _ in $(seq 100); do
        [ -e "$mnt/.crashfs" ] && return 0
        sleep 0.1
    done
    cat "$work/crashfs.log" >&2
    die "crashfs did not mount (its log is above)"
}

# unmount_model: unmounts $mnt and waits for crashfs to exit.
unmount_model() {
    umount "$mnt"
    wait "$fs_pid" || true
    fs_pid=""
}

# cleanup_model: for the EXIT trap: unmount if mounted, stop crashfs, remove $work.
cleanup_model() {
    if mountpoint -q "$mnt" 2>/dev/null; then umount "$mnt" || umount -l "$mnt" || true; fi
    if [ -n "$fs_pid" ]; then kill "$fs_pid" 2>/dev/null || true; wait "$fs_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}

# sum KEY JSON: the sum of every `"KEY": N` in the JSON text.
sum() { grep -o "\"$1\": [0-9]*" <<<"$2" | awk '{s += $2} END {print s + 0}'; }
