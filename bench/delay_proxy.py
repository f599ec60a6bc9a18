"""A TCP proxy on 127.0.0.1 that delays every chunk by a fixed time in each direction: the network between a
pod and Vault on another node, which loopback does not have. Used by the boot benchmark.

    python -m bench.delay_proxy --target-port 8200 --one-way-ms 0.5

Prints ``PORT <n>`` once it listens; runs until SIGTERM. A process of its own with blocking threads and
``time.sleep`` (precise to a fraction of a millisecond), because an asyncio timer waits at least a whole
millisecond in epoll and a thread in the client's process would wait for the GIL. TLS passes through
untouched. Order is kept per direction; an end of stream is passed on after the same delay.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import socket
import sys
import threading
import time
from collections.abc import Sequence

CHUNK = 65536


def _pipe(source: socket.socket, target: socket.socket, one_way: float) -> None:
    pending: queue.Queue[tuple[float, bytes]] = queue.Queue()

    def deliver() -> None:
        while True:
            due, data = pending.get()
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                if not data:
                    target.shutdown(socket.SHUT_WR)
                    return
                target.sendall(data)
            except OSError:
                return

    delivery = threading.Thread(target=deliver, daemon=True)
    delivery.start()
    with contextlib.suppress(OSError):
        while data := source.recv(CHUNK):
            pending.put((time.monotonic() + one_way, data))
    pending.put((time.monotonic() + one_way, b""))
    delivery.join()


def _connection(client: socket.socket, target_port: int, one_way: float) -> None:
    try:
        upstream = socket.create_connection(("127.0.0.1", target_port), timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    for sock in (client, upstream):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    directions = [
        threading.Thread(target=_pipe, args=(client, upstream, one_way), daemon=True),
        threading.Thread(target=_pipe, args=(upstream, client, one_way), daemon=True),
    ]
    for thread in directions:
        thread.start()
    for thread in directions:
        thread.join()
    client.close()
    upstream.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.delay_proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--one-way-ms", type=float, required=True, help="delay added in each direction")
    args = parser.parse_args(argv)
    one_way = args.one_way_ms / 1000
    with socket.create_server(("127.0.0.1", 0)) as listener:
        print(f"PORT {listener.getsockname()[1]}", flush=True)
        while True:
            client, _ = listener.accept()
            threading.Thread(
                target=_connection, args=(client, args.target_port, one_way), daemon=True
            ).start()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
    sys.exit(0)
