"""papr-emu: a PAPR/RTAS Dynamic Reconfiguration Connector platform emulator over gRPC.

The platform model (:mod:`papr_emu.model`) is pure Python and knows nothing of
gRPC; :mod:`papr_emu.service` adapts it to the ``papr.v1`` services and
:class:`PaprServer` serves them.

Example::

    from papr_emu import PaprServer
    from papr_emu.model import Platforms, default_geometry

    platforms = Platforms()
    platforms.create("default", default_geometry())
    server = PaprServer(platforms, ["127.0.0.1:0"])
    server.start()
"""

from .server import PaprServer

__all__ = ["PaprServer"]
