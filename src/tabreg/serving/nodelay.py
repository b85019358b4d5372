"""uvicorn's HTTP protocol with Nagle's algorithm off on every connection.

asyncio turns Nagle off (``TCP_NODELAY``) only on sockets whose protocol number says TCP.
uvicorn's own listening socket, which it binds for several worker processes, is made without
one, so its connections kept Nagle on: an answer written in two parts (headers, then body)
waited for the client's delayed acknowledgement, 40 ms on Linux, and two workers answered ten
times slower than one. Setting the option on each connection makes every mode equal.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from uvicorn.protocols.http.auto import AutoHTTPProtocol


class NoDelayHTTP(AutoHTTPProtocol):  # type: ignore[valid-type,misc]
    """uvicorn's HTTP protocol (httptools when installed, else h11), without Nagle."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
