#!/usr/bin/env python3
"""The SMB2 bits on the wire, from a tcpdump capture: smb-wire-bits.py PCAP PORT.

Reassembles every TCP stream to and from PORT (IPv4 or IPv6; Ethernet, Linux cooked
v1/v2 or raw IP link types), splits it into NetBIOS session messages and SMB2 messages
(following compound chains), and prints one JSON object:

  {"requests": N, "create": N, "create_options": {"0x...": N}, "write": N,
   "write_flags": {"0x...": N}, "flush": N, "encrypted": N, "compressed": N,
   "holes": N, "other": {"COMMAND": N}, "negotiate_capabilities": {"0x...": N},
   "encrypted_responses": N, "plain_requests": {"COMMAND": N},
   "plain_responses": {"COMMAND": N}, "plain_after_encrypted": N,
   "transform_flags": {"0x...": N}}

The first keys are about client-to-server requests: create_options counts CREATE
requests by CreateOptions (MS-SMB2 2.2.13, body offset 40), write_flags counts WRITE
requests by Flags (2.2.21, body offset 44), negotiate_capabilities counts NEGOTIATE
requests by Capabilities (2.2.3, body offset 8; SMB2_GLOBAL_CAP_ENCRYPTION is 0x40).
Encrypted (TRANSFORM header, 0xFD 'SMB', 2.2.41) and compressed (0xFC 'SMB', 2.2.42)
messages cannot be inspected and are only counted (encrypted: requests,
encrypted_responses: server-to-client), transform_flags counts TRANSFORM headers of
both directions by their Flags (2.2.41, offset 42: 0x1 = Encrypted). plain_requests
and plain_responses count the plaintext (0xFE 'SMB') messages of each direction by
command, plain_after_encrypted the plaintext messages that follow an encrypted one in
the same stream (once a session is encrypted, nothing of it is in clear).
holes counts streams (both directions) cut short where the capture missed bytes (only
what comes before the hole is counted).
Exit status 2 for an unreadable capture. Used by scripts/durability-e2e.sh.
"""
import json
import struct
import sys
from collections import Counter, defaultdict

COMMANDS = {0: "NEGOTIATE", 1: "SESSION_SETUP", 2: "LOGOFF", 3: "TREE_CONNECT",
            4: "TREE_DISCONNECT", 5: "CREATE", 6: "CLOSE", 7: "FLUSH", 8: "READ",
            9: "WRITE", 11: "IOCTL", 13: "ECHO", 14: "QUERY_DIRECTORY",
            16: "QUERY_INFO", 17: "SET_INFO"}


def packets(data):
    if len(data) < 24:
        raise ValueError("too short for a pcap file")
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        raise ValueError("not a pcap file (pcapng is not supported: use tcpdump -w)")
    linktype = struct.unpack(e + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack(e + "I", data[off + 8:off + 12])[0]
        yield linktype, data[off + 16:off + 16 + incl]
        off += 16 + incl


def ip_payload(linktype, frame):
    if linktype == 1:  # Ethernet
        if len(frame) < 14:
            return None
        ethertype, frame = struct.unpack(">H", frame[12:14])[0], frame[14:]
    elif linktype == 113:  # Linux cooked v1
        ethertype, frame = struct.unpack(">H", frame[14:16])[0], frame[16:]
    elif linktype == 276:  # Linux cooked v2
        ethertype, frame = struct.unpack(">H", frame[0:2])[0], frame[20:]
    elif linktype in (12, 101):  # raw IP
        ethertype = 0x0800 if frame and frame[0] >> 4 == 4 else 0x86DD
    else:
        raise ValueError(f"link type {linktype} not supported")
    if ethertype == 0x0800 and len(frame) >= 20 and frame[9] == 6:
        ihl = (frame[0] & 0xF) * 4
        total = struct.unpack(">H", frame[2:4])[0]
        return frame[12:20], frame[ihl:total]
    if ethertype == 0x86DD and len(frame) >= 40 and frame[6] == 6:
        plen = struct.unpack(">H", frame[4:6])[0]
        return frame[8:40], frame[40:40 + plen]
    return None


def streams(data, port):
    """The byte streams to and from `port`, reassembled by sequence number, each with
    whether it goes to the server and whether it was cut short by a hole (bytes the
    capture missed)."""
    segs = defaultdict(dict)
    for linktype, frame in packets(data):
        got = ip_payload(linktype, frame)
        if got is None:
            continue
        addrs, tcp = got
        if len(tcp) < 20:
            continue
        sport, dport, seq = struct.unpack(">HHI", tcp[:8])
        if port not in (sport, dport):
            continue
        payload = tcp[(tcp[12] >> 4) * 4:]
        if payload:
            segs[(addrs, sport, dport)].setdefault(seq, payload)
    for (_, _, dport), seg in segs.items():
        out = bytearray()
        first = min(seg)
        hole = False
        for rel, p in sorted(((seq - first) & 0xFFFFFFFF, p) for seq, p in seg.items()):
            if rel > len(out):
                hole = True
                break
            if rel + len(p) > len(out):
                out += p[len(out) - rel:]
        yield bytes(out), dport == port, hole


def main():
    if len(sys.argv) != 3:
        print("usage: smb-wire-bits.py PCAP PORT", file=sys.stderr)
        return 2
    try:
        with open(sys.argv[1], "rb") as f:
            data = f.read()
        port = int(sys.argv[2])
        out = {"requests": 0, "create": 0, "create_options": Counter(), "write": 0,
               "write_flags": Counter(), "flush": 0, "encrypted": 0, "compressed": 0,
               "holes": 0, "other": Counter(), "negotiate_capabilities": Counter(),
               "encrypted_responses": 0, "plain_requests": Counter(),
               "plain_responses": Counter(), "plain_after_encrypted": 0,
               "transform_flags": Counter()}
        for s, to_server, hole in streams(data, port):
            out["holes"] += hole
            off = 0
            seen_encrypted = False
            while off + 4 <= len(s):
                length = struct.unpack(">I", s[off:off + 4])[0] & 0xFFFFFF
                msg = s[off + 4:off + 4 + length]
                off += 4 + length
                if msg[:4] == b"\xfdSMB":
                    out["encrypted" if to_server else "encrypted_responses"] += 1
                    if len(msg) >= 44:
                        out["transform_flags"]["0x%x" % struct.unpack("<H", msg[42:44])[0]] += 1
                    seen_encrypted = True
                    continue
                if msg[:4] == b"\xfcSMB":
                    if to_server:
                        out["compressed"] += 1
                    continue
                while len(msg) >= 64 and msg[:4] == b"\xfeSMB":
                    cmd = struct.unpack("<H", msg[12:14])[0]
                    nxt = struct.unpack("<I", msg[20:24])[0]
                    body = msg[64:nxt] if nxt else msg[64:]
                    name = COMMANDS.get(cmd, str(cmd))
                    out["plain_requests" if to_server else "plain_responses"][name] += 1
                    out["plain_after_encrypted"] += seen_encrypted
                    if not to_server:
                        if not nxt:
                            break
                        msg = msg[nxt:]
                        continue
                    out["requests"] += 1
                    if cmd == 5 and len(body) >= 44:
                        out["create"] += 1
                        out["create_options"]["0x%x" % struct.unpack("<I", body[40:44])[0]] += 1
                    elif cmd == 9 and len(body) >= 48:
                        out["write"] += 1
                        out["write_flags"]["0x%x" % struct.unpack("<I", body[44:48])[0]] += 1
                    elif cmd == 7:
                        out["flush"] += 1
                    elif cmd == 0 and len(body) >= 12:
                        out["negotiate_capabilities"]["0x%x" % struct.unpack("<I", body[8:12])[0]] += 1
                        out["other"]["NEGOTIATE"] += 1
                    else:
                        out["other"][COMMANDS.get(cmd, str(cmd))] += 1
                    if not nxt:
                        break
                    msg = msg[nxt:]
    except (OSError, ValueError, struct.error) as e:
        print(f"smb-wire-bits: {sys.argv[1]}: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
