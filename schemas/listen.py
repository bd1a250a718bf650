"""A server's listening socket, bound before the server starts (the gateway, `serve`, the
API of `consume --http-port`): a port in use is then one error line and exit status 1 at
start, where uvicorn exited 3 after the gateway's start-up had begun (and, on a thread,
left `consume` running without its API)."""

from __future__ import annotations

import socket

from schemas.exceptions import ListenError

#: seconds an idle HTTP connection is kept (gateway and API): past a load balancer's idle
#: timeout (60 s on many), so the balancer, not the server, closes it first (else a request
#: sent on a connection the server is closing is a 502)
KEEP_ALIVE_S = 75


def listening(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host`:`port` (uvicorn listens on it)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock
