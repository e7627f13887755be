"""Is a listening port free? Checked before a server starts, so that a port another process holds is
a one-line error at once, not a server that never comes up while the caller talks to someone else.

The check binds the address the way uvicorn will (``SO_REUSEADDR``: a port with only closing
connections on it is free, one with a listening or bound socket is not) and closes the socket again.
Another process can still take the port between the check and the server's own bind; the server then
fails as it always did. Used by ``gateway serve``, ``gateway demo``, ``gateway demo-upstream`` and
``gateway dev-idp``.
"""

from __future__ import annotations

import errno
import socket


class PortUnavailable(Exception):
    """The address cannot be listened on; ``str()`` says why, in a few words."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(reason)
        self.host = host
        self.port = port
        self.reason = reason


def check_port(host: str, port: int) -> None:
    """Return when ``host:port`` can be listened on now; raise ``PortUnavailable`` when not."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PortUnavailable(host, port, f"cannot resolve host {host!r} ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortUnavailable(host, port, "already in use") from None
            if exc.errno == errno.EACCES:
                raise PortUnavailable(host, port, "not permitted (a port below 1024 needs privileges)") from None
            raise PortUnavailable(host, port, exc.strerror or str(exc)) from None


def pick_free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free on ``host`` now (for ``--port 0``: any free port)."""
    infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.bind(address)
        return int(sock.getsockname()[1])


def busy_message(command: str, what: str, error: PortUnavailable, choose: str) -> str:
    """The one line a command prints: the port, what wanted it, why not, and how to choose another."""
    return f"{command}: port {error.port} on {error.host} for {what} is not available ({error.reason}); {choose}"
