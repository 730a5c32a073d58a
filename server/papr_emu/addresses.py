"""Listen addresses as papr-emu takes them (``--listen``, ``--metrics-listen``, the config's ``[server]``).

gRPC takes almost any string and does something with it: ``127.0.0.1:99999`` binds a port
modulo 65536 and ``127.0.0.1`` binds port 443, both silently. These checks refuse such an
address before anything is built, with a line saying why.

Example::

    >>> listen_address("127.0.0.1:50051"), listen_address("[::1]:0"), listen_address("unix:/tmp/papr.sock")
    ('127.0.0.1:50051', '[::1]:0', 'unix:/tmp/papr.sock')
    >>> host_port("localhost:9100")
    ('localhost', 9100)
    >>> listen_address("127.0.0.1")
    Traceback (most recent call last):
    ...
    ValueError: '127.0.0.1' is not HOST:PORT or unix:PATH: no port
"""

from __future__ import annotations

from typing import Final

MAX_PORT: Final = 65535
_UNIX_PREFIXES: Final = ("unix:", "unix-abstract:")


def host_port(address: str, also: str = "") -> tuple[str, int]:
    """``"[::1]:50051"`` -> ``("::1", 50051)``; ValueError saying why not (``also``: other forms accepted)."""
    expected = f"{address!r} is not HOST:PORT{also}"
    host, colon, port = address.rpartition(":")
    if not colon or (host.count(":") and not (host.startswith("[") and host.endswith("]"))):
        # No colon, or an IPv6 address without brackets (its last group would be taken for the port).
        raise ValueError(f"{expected}: no port" if not colon else f"{expected}: an IPv6 host goes in brackets, [::1]")
    host = host.removeprefix("[").removesuffix("]")
    if not host:
        raise ValueError(f"{expected}: no host (0.0.0.0 or [::] for every interface)")
    if not port.isascii() or not port.isdigit() or int(port) > MAX_PORT:
        raise ValueError(f"{expected}: the port must be 0 to {MAX_PORT} (0: any free port)")
    return host, int(port)


def listen_address(address: str) -> str:
    """``address`` unchanged if gRPC may listen on it: HOST:PORT, ``unix:PATH`` or ``unix-abstract:NAME``."""
    if address.startswith(_UNIX_PREFIXES):
        if address.partition(":")[2].removeprefix("//") == "":
            raise ValueError(f"{address!r} names no socket")
        return address
    host_port(address, " or unix:PATH")
    return address
