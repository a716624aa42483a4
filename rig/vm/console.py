#!/usr/bin/env python3
"""The rig's end of a VM endpoint's console channel (rig/vm/rootfs/etc/parry/console).

  console.py SOCKET run [--timeout S] SCRIPT   run SCRIPT (sh) in the VM; print its
                                               output; exit with its status (124: no
                                               answer within S seconds, 125: no VM)
  console.py SOCKET reset                      reset the VM like its power button
                                               would not: a hard reset (SOCKET is the
                                               qemu monitor's)

SOCKET is the unix socket qemu serves the VM's second serial port on. One client at a
time: a lock file next to the socket serialises callers. Answers carry a nonce, so an
answer that arrives late for an earlier, abandoned request is never taken for this one.
"""
import base64
import fcntl
import os
import secrets
import socket
import sys
import time


def connect(path, deadline):
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)


def run(path, script, timeout):
    deadline = time.monotonic() + timeout
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        s = connect(path, deadline)
        if s is None:
            print(f"console: cannot connect to {path}", file=sys.stderr)
            return 125
        with s:
            nonce = secrets.token_hex(8)
            b64 = base64.b64encode(script.encode()).decode()
            s.sendall(f"RUN {nonce} {b64}\n".encode())
            buf = b""
            out = []
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    print(f"console: no answer within {timeout} s", file=sys.stderr)
                    return 124
                s.settimeout(left)
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    continue
                if not chunk:
                    print("console: the VM closed the channel", file=sys.stderr)
                    return 125
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    words = raw.strip(b"\r").decode("ascii", "replace").split(" ")
                    if len(words) != 3 or words[0] != nonce:
                        continue  # an echo, a late answer, or noise
                    if words[1] == "OUT":
                        out.append(words[2])
                    elif words[1] == "END":
                        sys.stdout.buffer.write(base64.b64decode("".join(out)))
                        sys.stdout.flush()
                        return int(words[2]) if words[2].isdigit() else 255


def reset(path, timeout):
    s = connect(path, time.monotonic() + timeout)
    if s is None:
        print(f"console: cannot connect to {path}", file=sys.stderr)
        return 125
    with s:
        s.settimeout(timeout)
        try:
            seen = b""
            while b"(qemu)" not in seen:  # the monitor reads input once it prompts
                chunk = s.recv(4096)
                if not chunk:
                    break
                seen += chunk
            s.sendall(b"system_reset\n")
            seen = b""
            while seen.count(b"(qemu)") < 1:  # the next prompt: the reset is done
                chunk = s.recv(4096)
                if not chunk:
                    break
                seen += chunk
        except socket.timeout:
            print("console: the monitor did not answer", file=sys.stderr)
            return 124
    return 0


def main(argv):
    if len(argv) >= 3 and argv[2] == "reset":
        return reset(argv[1], 5)
    if len(argv) < 4 or argv[2] != "run":
        print(__doc__, file=sys.stderr)
        return 2
    timeout, rest = 30.0, argv[3:]
    if rest[0] == "--timeout" and len(rest) >= 3:
        timeout, rest = float(rest[1]), rest[2:]
    return run(argv[1], " ".join(rest), timeout)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
