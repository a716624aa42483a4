#!/usr/bin/python3
"""A syslog-over-TLS receiver (RFC 5425) standing in for a SIEM in the integration
test: accepts connections on 127.0.0.1:PORT one after another and writes every byte
received to standard output, flushed at once. Standard library only.

    syslog_tls_receiver.py PORT CERT KEY
"""
import socket
import ssl
import sys


def main():
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    with socket.create_server(("127.0.0.1", port)) as listener:
        print("listening", flush=True)
        while True:
            conn, _ = listener.accept()
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    while data := tls.recv(65536):
                        sys.stdout.buffer.write(data)
                        sys.stdout.buffer.flush()
            except (ssl.SSLError, OSError) as e:
                print(f"\nconnection ended: {e}", flush=True)


if __name__ == "__main__":
    main()
