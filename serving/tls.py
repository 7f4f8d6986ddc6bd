"""Optional TLS for the gRPC server and client (PEM files).

Server: a certificate chain and its private key; with a client CA, clients
must present a certificate it signed (mutual TLS). Client: the CA that signed
the server's certificate, and its own certificate and key for mutual TLS.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import grpc


def _read(path: Optional[str], what: str) -> Optional[bytes]:
    if path is None:
        return None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path!r} does not exist or is not a file")
    with open(path, "rb") as f:
        return f.read()


@dataclasses.dataclass(frozen=True)
class ServerTls:
    cert_file: str
    key_file: str
    client_ca_file: Optional[str] = None  # set: clients must present a certificate (mutual TLS)

    def credentials(self) -> grpc.ServerCredentials:
        client_ca = _read(self.client_ca_file, "client CA file")
        return grpc.ssl_server_credentials(
            [(_read(self.key_file, "TLS key file"), _read(self.cert_file, "TLS certificate file"))],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )


@dataclasses.dataclass(frozen=True)
class ClientTls:
    ca_file: Optional[str] = None  # None: the system's trusted roots
    cert_file: Optional[str] = None  # with key_file: mutual TLS
    key_file: Optional[str] = None

    def __post_init__(self):
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "CA file"),
            private_key=_read(self.key_file, "TLS key file"),
            certificate_chain=_read(self.cert_file, "TLS certificate file"),
        )


def server_tls_from_args(
    cert: Optional[str], key: Optional[str], client_ca: Optional[str]
) -> Optional[ServerTls]:
    """TLS settings from CLI flags; None when no flag is given."""
    if cert is None and key is None:
        if client_ca is not None:
            raise SystemExit("error: --tls-client-ca needs --tls-cert and --tls-key")
        return None
    if cert is None or key is None:
        raise SystemExit("error: TLS needs both --tls-cert and --tls-key")
    return ServerTls(cert, key, client_ca)
