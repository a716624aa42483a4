# PID 1 of a rig endpoint (run by parry-rig under `unshare --mount --pid --uts --fork
# --mount-proc --propagation private`): names the host, mounts the endpoint's private
# tmpfs, says it is ready, then reaps orphans for as long as the endpoint lives, so a
# killed process never lingers as a zombie. Run with /usr/bin/python3 (standard
# library only).
#
# usage: holder.py HOSTNAME FILES_DIR READY_FILE
import ctypes
import os
import signal
import socket
import sys


def main():
    hostname, files_dir, ready_file = sys.argv[1:4]
    if os.getpid() != 1:
        sys.exit("holder: not PID 1 of a PID namespace")
    socket.sethostname(hostname)
    os.makedirs(files_dir, exist_ok=True)
    libc = ctypes.CDLL(None, use_errno=True)
    # In this mount namespace only (propagation private): the host never sees it.
    if libc.mount(b"tmpfs", files_dir.encode(), b"tmpfs", 0, b"mode=0755,size=64m") != 0:
        err = ctypes.get_errno()
        sys.exit(f"holder: mount tmpfs on {files_dir}: {os.strerror(err)}")
    # PID 1 gets only the signals it handles: SIGTERM ends the endpoint cleanly.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    # Blocked, so that a child exiting between two waits is still pending for sigwait.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    tmp = ready_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{hostname}\n")
    os.rename(tmp, ready_file)
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            # No children right now; wait for one to appear (reparented orphans
            # included) without spinning.
            signal.sigwait({signal.SIGCHLD})
        except InterruptedError:
            pass


if __name__ == "__main__":
    main()
