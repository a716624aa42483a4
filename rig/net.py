# Reachability probes for the rig, run inside a namespace with /usr/bin/python3
# (these machines have no ping, nc or socat). Exit status 0 means reached.
#
#   net.py ping ADDR [TIMEOUT_S]          one ICMP (v4 or v6) echo, answered in time
#   net.py connect ADDR PORT [TIMEOUT_S]  a TCP connection is accepted in time
#   net.py listen PORT READY_FILE         accept (and close) TCP connections on every
#                                         address, v4 and v6, until killed; READY_FILE
#                                         appears once listening
#   net.py sniff IFACE PORT READY_FILE OUT  the payload of every TCP segment to PORT
#                                         (IPv4 and IPv6) seen on IFACE appended to
#                                         OUT.up, from PORT to OUT.down, until killed;
#                                         READY_FILE appears once capturing
import ipaddress
import os
import select
import socket
import struct
import sys
import time


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ping(addr, timeout):
    v6 = ipaddress.ip_address(addr).version == 6
    if v6:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        req, rep = 128, 129  # the kernel fills in the ICMPv6 checksum
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        req, rep = 8, 0
    ident = os.getpid() & 0xFFFF
    payload = b"parry-rig" + struct.pack("!d", time.time())
    header = struct.pack("!BBHHH", req, 0, 0, ident, 1)
    if not v6:
        header = struct.pack("!BBHHH", req, 0, checksum(header + payload), ident, 1)
    try:
        sock.sendto(header + payload, (addr, 0))
    except OSError:  # e.g. EPERM: an nftables output rule dropped it
        return False
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            return False
        data, src = sock.recvfrom(2048)
        if src[0] != addr:
            continue
        icmp = data if v6 else data[(data[0] & 0x0F) * 4:]
        if len(icmp) >= 8:
            typ, _, _, rid, _ = struct.unpack("!BBHHH", icmp[:8])
            if typ == rep and rid == ident:
                return True


def connect(addr, port, timeout):
    try:
        with socket.create_connection((addr, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def listen(port, ready_file):
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", int(port)))
    sock.listen(64)
    with open(ready_file + ".tmp", "w") as f:
        f.write(f"{os.getpid()}\n")
    os.rename(ready_file + ".tmp", ready_file)
    while True:
        conn, _ = sock.accept()
        conn.close()


def tcp_payload(frame, port):
    """(direction, payload) of an Ethernet frame's TCP segment to ("up") or from
    ("down") PORT, else None."""
    if len(frame) < 14:
        return None
    ethertype = struct.unpack("!H", frame[12:14])[0]
    ip = frame[14:]
    if ethertype == 0x0800 and len(ip) >= 20 and ip[9] == 6:
        total = struct.unpack("!H", ip[2:4])[0]
        tcp, ip = ip[(ip[0] & 0x0F) * 4:total], ip[:total]
    elif ethertype == 0x86DD and len(ip) >= 40 and ip[6] == 6:  # no extension headers
        tcp = ip[40:40 + struct.unpack("!H", ip[4:6])[0]]
    else:
        return None
    if len(tcp) < 20:
        return None
    sport, dport = struct.unpack("!HH", tcp[:4])
    if port not in (sport, dport):
        return None
    return ("up" if dport == port else "down"), tcp[(tcp[12] >> 4) * 4:]


def sniff(iface, port, ready_file, out):
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    sock.bind((iface, 0))
    with open(ready_file + ".tmp", "w") as f:
        f.write(f"{os.getpid()}\n")
    os.rename(ready_file + ".tmp", ready_file)
    files = {d: open(f"{out}.{d}", "ab") for d in ("up", "down")}
    while True:
        seg = tcp_payload(sock.recv(262144), int(port))  # offloaded (GSO) frames too
        if seg and seg[1]:
            files[seg[0]].write(seg[1])
            files[seg[0]].flush()


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "ping":
        sys.exit(0 if ping(args[0], float(args[1]) if len(args) > 1 else 1.0) else 1)
    if cmd == "connect":
        sys.exit(0 if connect(args[0], args[1], float(args[2]) if len(args) > 2 else 1.0)
                 else 1)
    if cmd == "listen":
        listen(args[0], args[1])
    if cmd == "sniff":
        sniff(args[0], args[1], args[2], args[3])
    sys.exit(f"net.py: unknown command {cmd}")


if __name__ == "__main__":
    main()
