"""`gap serve --workers N` shares a listening socket whose connections get TCP_NODELAY.

uvicorn makes that socket with protocol 0, and asyncio sets TCP_NODELAY only on connections
accepted from a TCP-protocol socket: every response then waited about 40 ms for the client's
delayed ACK (``/healthz`` p50 44 ms with 2 workers against 3 ms with one).
"""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from fixtures.server import free_port
from gap.cli.serve import _tcp_listener


def test_connections_accepted_by_the_workers_socket_do_not_wait_for_nagle() -> None:
    config = uvicorn.Config("gap.web.app:replica_app", factory=True, workers=2, port=free_port())
    listener = _tcp_listener(config)

    async def accepted_nodelay() -> int:
        flags: list[int] = []

        def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            flags.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(connected, sock=listener)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", config.port)
            while not flags:  # the server's callback runs once the connection is accepted
                await asyncio.sleep(0.01)
            writer.close()
        return flags[0]

    assert asyncio.run(asyncio.wait_for(accepted_nodelay(), 10)) == 1
