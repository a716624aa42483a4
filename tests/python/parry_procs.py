"""What the project's Python tests need to run parryd and its agents: free loopback
ports, and children that die with the test. Standard library only."""
import signal
import socket


def free_ports(n):
    """`n` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def die_with_parent():
    """In the child before exec: get SIGKILL if this test process dies (Linux), so
    no parryd outlives a test that was killed (e.g. by CTest's TIMEOUT)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort
        pass
