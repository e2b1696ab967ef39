#!/usr/bin/env bash
# The SMB proof of `flushctl durability` (issue 13, item 2): a real Samba server on
# 127.0.0.1 whose share lives on the crash model (crashfs: data is durable only after
# fsync / fdatasync / an O_SYNC or O_DSYNC write), and flushctl's own SMB2/3 client.
#
# For each pattern and each crash timing (after all acknowledgements; mid-stream), with
# `strict sync = yes` (Samba's default) and `strict sync = no` (a server that ignores
# write-through and FLUSH): mount a fresh crash model, start smbd, `durability run
# --target smb://root@127.0.0.1:PORT/crash/target.dat` with a local witness outside the
# mount, crash the server (SIGKILL to smbd's process group, then drop every unsynced
# page: `echo crash > MNT/.crashfs`), bring it back (`echo reset`, restart smbd),
# `durability verify` over SMB, and print a table.
#
# Then, with strict sync = yes, the same for write-through and flush on a server that
# requires encryption (`server smb encrypt = required`: the session is encrypted from
# SESSION_SETUP on; both crash timings) and on a share that requires it (`smb encrypt =
# required` on the share only: encrypted from TREE_CONNECT on; after-acks only). smb2
# 0.39 does not set SMB2_GLOBAL_CAP_ENCRYPTION; flushctl sets it on the wire itself and
# re-hashes the preauth integrity value (user-tool/src/durability/smb/negotiate.rs).
#
# Every run that completes (the after-acks cases) is captured on lo with tcpdump, and
# scripts/smb-wire-bits.py checks the bits each pattern put on the wire: one WRITE per
# acknowledged record with Flags 0x1 (write-through) or 0 (the others), CreateOptions
# 0x42 (FILE_WRITE_THROUGH | FILE_NON_DIRECTORY_FILE) for create-write-through and 0x40
# for the others, one FLUSH per record for flush and none otherwise, no TRANSFORM
# header (encryption not required: flushctl does not encrypt). With encryption required:
# no WRITE, CREATE or FLUSH in clear; the only plaintext messages are NEGOTIATE and
# SESSION_SETUP (and TREE_CONNECT for the share), none after the first TRANSFORM header
# of a stream; at least one TRANSFORM request per WRITE, FLUSH and CREATE the run made
# and as many TRANSFORM responses, every TRANSFORM with Flags 0x1 (Encrypted); and the
# run reports a cipher. In every run, the one NEGOTIATE request carries Capabilities bit
# 0x40 (SMB2_GLOBAL_CAP_ENCRYPTION).
#
# Exits 0 only if, with strict sync = yes, write-through, create-write-through and flush
# lose 0 acknowledged records (encrypted or not) and plain (the negative control) loses
# some; with strict sync = no, write-through, create-write-through and flush lose some
# (the tester catches a server that ignores them); and every wire check passes. Needs
# root and /dev/fuse (Linux); installs samba, tcpdump and python3 when missing. About a
# minute and a half.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "durability-e2e: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (FUSE mount, smbd, tcpdump)"
[ -c /dev/fuse ] || die "/dev/fuse is missing"

missing=()
command -v smbd >/dev/null 2>&1 || missing+=(samba)
command -v tcpdump >/dev/null 2>&1 || missing+=(tcpdump)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "durability-e2e: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
fi

cargo build --quiet -p flushctl -p flushguard-crashfs
bin="${CARGO_TARGET_DIR:-target}/debug"
flushctl="$(realpath "$bin/flushctl")"
crashfs="$(realpath "$bin/crashfs")"
wirebits="$(realpath scripts/smb-wire-bits.py)"

# shellcheck source=scripts/crash-model.sh
. scripts/crash-model.sh
smbd_pid=""
cap_pid=""
stop_smbd() {
    if [ -n "$smbd_pid" ]; then
        # smbd leads its own process group (setsid): the group is smbd and its children.
        kill -KILL -- "-$smbd_pid" 2>/dev/null || true
        wait "$smbd_pid" 2>/dev/null || true
        # Its children die too, a moment later; they hold files on the mount.
        for _ in $(seq 100); do
            kill -0 -- "-$smbd_pid" 2>/dev/null || break
            sleep 0.05
        done
        smbd_pid=""
    fi
}
cleanup() {
    if [ -n "$cap_pid" ]; then kill -INT "$cap_pid" 2>/dev/null || true; wait "$cap_pid" 2>/dev/null || true; fi
    stop_smbd
    cleanup_model
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
FLUSHCTL_SMB_PASSWORD="$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
export FLUSHCTL_SMB_PASSWORD

# write_conf STRICT ENCRYPT: the smb.conf of this run, everything under $work; ENCRYPT is
# off (Samba's default: offered, not required), server or share (required there).
write_conf() {
    local server_encrypt="" share_encrypt=""
    case "$2" in
        off) ;;
        server) server_encrypt="server smb encrypt = required" ;;
        share) share_encrypt="smb encrypt = required" ;;
        *) die "write_conf: encrypt $2?" ;;
    esac
    mkdir -p "$work"/{lock,state,cache,private,pid,ncalrpc,binddns}
    cat >"$work/smb.conf" <<EOF
[global]
  netbios name = FGE2E
  workgroup = WORKGROUP
  server role = standalone server
  smb ports = $port
  interfaces = 127.0.0.1
  bind interfaces only = yes
  disable netbios = yes
  lock directory = $work/lock
  state directory = $work/state
  cache directory = $work/cache
  private dir = $work/private
  pid directory = $work/pid
  ncalrpc dir = $work/ncalrpc
  binddns dir = $work/binddns
  passdb backend = tdbsam:$work/private/passdb.tdb
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  log level = 1
  # The crash model keeps no extended attributes and no locks.
  store dos attributes = no
  ea support = no
  map archive = no
  kernel oplocks = no
  kernel share modes = no
  posix locking = no
  use sendfile = no
  # What is under test: with yes (Samba's default) write-through and FLUSH reach fsync.
  strict sync = $1
  $server_encrypt
[crash]
  path = $mnt
  read only = no
  $share_encrypt
EOF
}

start_smbd() {
    # setsid: smbd leads a process group of its own, so the crash (a SIGKILL to that
    # group) reaches smbd and all its children, and nothing of this script.
    setsid smbd --foreground --no-process-group --debug-stdout -s "$work/smb.conf" \
        >>"$work/smbd.log" 2>&1 </dev/null &
    smbd_pid=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            [ "$(cat "/proc/$smbd_pid/comm" 2>/dev/null)" = smbd ] ||
                die "pid $smbd_pid is not smbd (setsid forked?)"
            return 0
        fi
        sleep 0.1
    done
    tail -20 "$work/smbd.log" >&2
    die "smbd did not listen on 127.0.0.1:$port"
}

start_capture() {
    : >"$work/tcpdump.err"
    tcpdump -i lo --immediate-mode -U -B 65536 -s 0 -w "$work/cap.pcap" "tcp port $port" \
        2>"$work/tcpdump.err" &
    cap_pid=$!
    for _ in $(seq 100); do
        grep -q "listening on" "$work/tcpdump.err" && return 0
        sleep 0.05
    done
    cat "$work/tcpdump.err" >&2
    die "tcpdump did not start"
}

stop_capture() {
    sleep 0.3
    kill -INT "$cap_pid"
    wait "$cap_pid" || true
    cap_pid=""
}

# check_wire PATTERN ACKED THREADS ENCRYPT CIPHER: the capture against the pattern and
# the encryption the server requires (CIPHER: what the run reported); prints a summary,
# returns 1 on a mismatch.
check_wire() {
    python3 "$wirebits" "$work/cap.pcap" "$port" >"$work/wire.json" || return 1
    python3 - "$work/wire.json" "$1" "$2" "$3" "$4" "$5" <<'EOF'
import json, sys
w = json.load(open(sys.argv[1]))
pattern, acked, threads = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
encrypt, cipher = sys.argv[5], sys.argv[6]
bad = []
caps = w["negotiate_capabilities"]
if sum(caps.values()) != 1 or not all(int(c, 16) & 0x40 for c in caps):
    bad.append(f"want one NEGOTIATE request with Capabilities bit 0x40, got {caps}")
def counts(c):
    return ",".join(f"{k}:{n}" for k, n in sorted(c.items())) or "-"
if encrypt == "off":
    flags = "0x1" if pattern == "write-through" else "0x0"
    options = "0x42" if pattern == "create-write-through" else "0x40"
    flushes = acked if pattern == "flush" else 0
    want = {"write_flags": {flags: acked}, "create_options": {options: threads},
            "flush": flushes, "encrypted": 0, "encrypted_responses": 0, "compressed": 0,
            "holes": 0}
    if cipher != "none":
        bad.append(f"the run reported encryption {cipher!r}, want none")
    summary = "WRITE %s CREATE %s FLUSH %d caps %s" % (
        counts(w["write_flags"]), counts(w["create_options"]), w["flush"], counts(caps))
else:
    # Per record one WRITE (and one FLUSH for flush), per writer one CREATE: each is
    # one TRANSFORM request and one TRANSFORM response at least.
    least = acked * (2 if pattern == "flush" else 1) + threads
    clear = {"NEGOTIATE", "SESSION_SETUP"} | ({"TREE_CONNECT"} if encrypt == "share" else set())
    want = {"write": 0, "create": 0, "flush": 0, "compressed": 0, "holes": 0,
            "plain_after_encrypted": 0}
    for d in ("plain_requests", "plain_responses"):
        if not set(w[d]) <= clear:
            bad.append(f"{d}: {w[d]}, want only {sorted(clear)}")
    if encrypt == "share" and w["plain_requests"].get("TREE_CONNECT") != 1:
        bad.append(f"want the share's TREE_CONNECT in clear, got {w['plain_requests']}")
    for k in ("encrypted", "encrypted_responses"):
        if w[k] < least:
            bad.append(f"{k}: {w[k]} TRANSFORM messages, want at least {least}")
    if w["transform_flags"] != {"0x1": w["encrypted"] + w["encrypted_responses"]}:
        bad.append(f"TRANSFORM Flags {w['transform_flags']}, want all 0x1")
    if cipher in ("none", ""):
        bad.append(f"the run reported encryption {cipher!r}, want a cipher")
    summary = "TRANSFORM %d up %d down %s caps %s" % (
        w["encrypted"], w["encrypted_responses"], cipher, counts(caps))
got = {k: w[k] for k in want}
if got != want:
    bad.append(f"want {want}, got {got}")
print(summary)
if bad:
    print(f"wire mismatch for {pattern} (encrypt {encrypt}): " + "; ".join(bad), file=sys.stderr)
    sys.exit(1)
EOF
}


threads=2
rows=()
fail=0
started=$SECONDS
# STRICT ENCRYPT PATTERN... -- CRASH-TIMING...
configs=(
    "yes off write-through create-write-through flush plain -- after-acks mid-stream"
    "no off write-through create-write-through flush -- after-acks mid-stream"
    "yes server write-through flush -- after-acks mid-stream"
    "yes share write-through flush -- after-acks"
)
for config in "${configs[@]}"; do
    read -r strict encrypt rest <<<"$config"
    patterns="${rest%% -- *}"
    whens="${rest##* -- }"
    write_conf "$strict" "$encrypt"
    if [ ! -e "$work/private/passdb.tdb" ]; then
        printf '%s\n%s\n' "$FLUSHCTL_SMB_PASSWORD" "$FLUSHCTL_SMB_PASSWORD" |
            smbpasswd -c "$work/smb.conf" -a -s root >/dev/null
    fi
    for pattern in $patterns; do
        for when in $whens; do
            mount_model
            start_smbd
            url="smb://root@127.0.0.1:$port/crash/target.dat"
            witness="$work/$strict-$encrypt-$pattern-$when.fgw"
            wire="-"
            wire_ok=yes
            if [ "$when" = after-acks ]; then
                start_capture
                "$flushctl" durability run --target "$url" --witness "$witness" \
                    --records 200 --threads "$threads" --pattern "$pattern" --no-progress \
                    >"$work/run.out" 2>"$work/run.err" ||
                    { cat "$work/run.err" >&2; die "run ($strict $encrypt $pattern) failed"; }
                stop_capture
                run_acked="$(awk '/^acknowledged/ {print $2}' "$work/run.out")"
                cipher="$(sed -n 's/^SMB dialect .*, encryption \([^,]*\),.*/\1/p' "$work/run.out")"
                wire="$(check_wire "$pattern" "$run_acked" "$threads" "$encrypt" "$cipher" \
                    2>"$work/wire.err")" ||
                    { wire_ok=NO; cat "$work/wire.err" >&2; }
            else
                "$flushctl" durability run --target "$url" --witness "$witness" \
                    --duration 60s --threads "$threads" --pattern "$pattern" --no-progress \
                    >/dev/null 2>"$work/run.err" &
                run_pid=$!
                # Crash once at least 100 acknowledgements are in the witness (40-byte entries).
                for _ in $(seq 300); do
                    [ "$(stat -c %s "$witness" 2>/dev/null || echo 0)" -ge $((40 * 101)) ] && break
                    sleep 0.05
                done
            fi
            # The crash: the server dies, then its disk loses what was never synced.
            stop_smbd
            echo crash >"$mnt/.crashfs"
            dropped="$(awk '/^dropped_pages/ {print $2}' "$mnt/.crashfs")"
            echo reset >"$mnt/.crashfs"
            if [ "$when" = mid-stream ]; then
                # The writers now fail (the connection is gone) and stop.
                wait "$run_pid" && run_rc=0 || run_rc=$?
                [ "$run_rc" -ne 0 ] || { echo "mid-stream run ($strict $encrypt $pattern) did not notice the crash" >&2; fail=1; }
            fi
            start_smbd
            json="$("$flushctl" --json durability verify --target "$url" --witness "$witness")" \
                && verify_rc=0 || verify_rc=$?
            stop_smbd
            unmount_model
            acked="$(sum acknowledged "$json")"
            lost="$(sum lost "$json")"
            ok=yes
            if [ "$pattern" = plain ] || [ "$strict" = no ]; then
                expect="some lost"
                { [ "$lost" -gt 0 ] && [ "$verify_rc" -eq 8 ]; } || ok=NO
            else
                expect="0 lost"
                { [ "$lost" -eq 0 ] && [ "$verify_rc" -eq 0 ] && [ "$acked" -gt 0 ]; } || ok=NO
            fi
            [ "$wire_ok" = yes ] || ok=NO
            [ "$ok" = yes ] || fail=1
            rows+=("$(printf '%-6s %-7s %-21s %-11s %12s %6s %14s %6s  %-50s %-10s %s' \
                "$strict" "$encrypt" "$pattern" "$when" "$acked" "$lost" "$dropped" \
                "$verify_rc" "$wire" "$expect" "$ok")")
        done
    done
done

printf '\n%-6s %-7s %-21s %-11s %12s %6s %14s %6s  %-50s %-10s %s\n' \
    strict encrypt pattern crash acknowledged lost "dropped pages" verify \
    "wire (flags:count; TRANSFORM messages)" expected ok
printf '%s\n' "${rows[@]}"
echo "(Samba $(smbd --version | awk '{print $2}'), 127.0.0.1:$port, $threads writers, 4 KiB records; $((SECONDS - started)) s)"
if [ "$fail" -ne 0 ]; then
    echo "--- smbd log (tail)" >&2
    tail -30 "$work/smbd.log" >&2
    die "FAILED"
fi
echo "durability-e2e: with strict sync = yes, write-through, create-write-through and flush lost nothing acknowledged and plain lost records; with strict sync = no, the same three lost records; with encryption required (server, share), write-through and flush lost nothing and nothing of the session was in clear after SESSION_SETUP (TREE_CONNECT for the share); every pattern's bits were on the wire"
