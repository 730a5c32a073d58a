"""The image's HEALTHCHECK: asks the gRPC health service of the server in this container.

Health needs no token, but it needs TLS when the server has it (and a client certificate
under mTLS), so this reads what the entrypoint gives the server, in /etc/papr-emu
(PAPR_EMU_DIR), with the clients' variables first:

- PAPR_EMU_HEALTH_TARGET: the address (default 127.0.0.1:50051);
- PAPR_EMU_CA, else tls.crt: TLS on, trusting that PEM (the server's own certificate will do);
  neither: plaintext (a `--insecure` or loopback run);
- PAPR_EMU_SERVER_NAME, else the first DNS name of tls.crt: the name checked;
- PAPR_EMU_CERT and PAPR_EMU_KEY, else healthcheck.crt and healthcheck.key: the client
  certificate presented under mTLS (client-ca.pem).

Exits 0 when the server answers SERVING, 1 otherwise (one line on stderr saying why).
"""

from __future__ import annotations

import os
import ssl
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _file(variable: str, default: Path) -> Path | None:
    """The file the variable names, else the default if it exists."""
    if os.environ.get(variable):
        return Path(os.environ[variable])
    return default if default.is_file() else None


def _server_name(cert: Path) -> str | None:
    """PAPR_EMU_SERVER_NAME, else the certificate's first DNS name (None: check the target's host)."""
    if os.environ.get("PAPR_EMU_SERVER_NAME"):
        return os.environ["PAPR_EMU_SERVER_NAME"]
    try:
        decoded = ssl._ssl._test_decode_cert(str(cert))  # type: ignore[attr-defined]  # a private helper of CPython's
    except (AttributeError, ssl.SSLError, OSError):
        return None
    for kind, name in decoded.get("subjectAltName", ()):
        if kind == "DNS" and isinstance(name, str):
            return "healthcheck." + name[2:] if name.startswith("*.") else name
    return None


def channel(target: str, directory: Path) -> grpc.Channel:
    roots = _file("PAPR_EMU_CA", directory / "tls.crt")
    if roots is None:
        return grpc.insecure_channel(target)
    cert = _file("PAPR_EMU_CERT", directory / "healthcheck.crt")
    key = _file("PAPR_EMU_KEY", directory / "healthcheck.key")
    credentials = grpc.ssl_channel_credentials(
        roots.read_bytes(),
        key.read_bytes() if key is not None and cert is not None else None,
        cert.read_bytes() if key is not None and cert is not None else None,
    )
    server_cert = directory / "tls.crt"
    name = _server_name(server_cert if server_cert.is_file() else roots)
    options = [("grpc.ssl_target_name_override", name)] if name else []
    return grpc.secure_channel(target, credentials, options=options)


def main() -> int:
    target = os.environ.get("PAPR_EMU_HEALTH_TARGET") or "127.0.0.1:50051"
    directory = Path(os.environ.get("PAPR_EMU_DIR") or "/etc/papr-emu")
    try:
        with channel(target, directory) as chan:
            reply = health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(), timeout=4)
    except grpc.RpcError as error:
        print(f"healthcheck: {target}: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"healthcheck: {error}", file=sys.stderr)
        return 1
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        print(f"healthcheck: {target}: {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
