# A TCP relay that adds latency (this kernel has no netem): every chunk read from one
# side is written to the other DELAY_MS later, in order, in both directions. Run with
# /usr/bin/python3 inside the server's namespace; the agent's `server` points at it.
#
# usage: relay.py LISTEN_ADDR LISTEN_PORT TARGET_ADDR TARGET_PORT DELAY_MS READY_FILE
import asyncio
import os
import sys


async def pump(reader, writer, delay):
    # Reading and writing are decoupled by a queue so the delay is latency, not a
    # throughput cap: each chunk keeps the time it arrived.
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def read():
        try:
            while True:
                data = await reader.read(65536)
                await queue.put((loop.time() + delay, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            await queue.put((loop.time() + delay, b""))

    async def write():
        try:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            writer.close()

    await asyncio.gather(read(), write())


async def main():
    listen_addr, listen_port, target_addr, target_port, delay_ms, ready = sys.argv[1:7]
    delay = int(delay_ms) / 1000.0

    async def handle(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection(
                target_addr, int(target_port))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pump(client_reader, server_writer, delay),
                             pump(server_reader, client_writer, delay),
                             return_exceptions=True)

    server = await asyncio.start_server(handle, listen_addr, int(listen_port),
                                        reuse_address=True)
    with open(ready + ".tmp", "w") as f:
        f.write(f"{os.getpid()}\n")
    os.rename(ready + ".tmp", ready)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
