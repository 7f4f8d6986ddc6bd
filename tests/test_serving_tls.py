"""TLS and mutual TLS for the local gRPC server and the client."""

import datetime
import ipaddress

import grpc
import pytest

from serving.client import RecommenderClient
from serving.server import ModelServer
from serving.tls import ClientTls, ServerTls, server_tls_from_args
from tests.serving_fixtures import push_toy

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

MODEL = "recommender"


def _issue(directory, name, issuer=None, ca=False):
    """Writes <name>.pem and <name>.key: a CA, or a 127.0.0.1 certificate signed by ``issuer``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key, str(cert_path), str(key_path)


@pytest.fixture
def pki(tmp_path):
    ca = _issue(tmp_path, "ca", ca=True)
    return {
        "ca": ca,
        "server": _issue(tmp_path, "server", issuer=ca[:2]),
        "client": _issue(tmp_path, "client", issuer=ca[:2]),
        "stranger": _issue(tmp_path, "stranger"),
    }


@pytest.fixture
def model_dir(tmp_path):
    base = tmp_path / "serving" / MODEL
    push_toy(str(base), 1, str(tmp_path / "scratch"))
    return str(base)


def _predict(address, **kwargs):
    with RecommenderClient(address, MODEL, timeout=10, **kwargs) as client:
        _, version = client.predict_examples([{"user_id": "a"}])
        return version


def test_tls_server_answers_tls_clients_only(model_dir, pki):
    tls = ServerTls(pki["server"][2], pki["server"][3])
    with ModelServer(MODEL, model_dir, port=0, tls=tls) as server:
        assert _predict(server.address, tls=ClientTls(pki["ca"][2])) == 1
        with pytest.raises(grpc.RpcError) as plaintext:
            _predict(server.address)
        assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError):  # a certificate the client does not trust
            _predict(server.address, tls=ClientTls(pki["stranger"][2]))


def test_mutual_tls_requires_a_client_certificate_from_the_ca(model_dir, pki):
    tls = ServerTls(pki["server"][2], pki["server"][3], client_ca_file=pki["ca"][2])
    with ModelServer(MODEL, model_dir, port=0, tls=tls) as server:
        client_tls = ClientTls(pki["ca"][2], pki["client"][2], pki["client"][3])
        assert _predict(server.address, tls=client_tls) == 1
        with pytest.raises(grpc.RpcError):
            _predict(server.address, tls=ClientTls(pki["ca"][2]))
        with pytest.raises(grpc.RpcError):
            _predict(
                server.address, tls=ClientTls(pki["ca"][2], pki["stranger"][2], pki["stranger"][3])
            )


def test_tls_settings_are_checked(tmp_path):
    with pytest.raises(SystemExit, match="both --tls-cert and --tls-key"):
        server_tls_from_args("cert.pem", None, None)
    with pytest.raises(SystemExit, match="--tls-client-ca needs"):
        server_tls_from_args(None, None, "ca.pem")
    assert server_tls_from_args(None, None, None) is None
    with pytest.raises(ValueError, match="needs its key"):
        ClientTls(cert_file="c.pem")
    key = tmp_path / "server.key"
    key.write_text("-----BEGIN PRIVATE KEY-----")
    with pytest.raises(FileNotFoundError, match="TLS certificate file .*missing.pem"):
        ServerTls(str(tmp_path / "missing.pem"), str(key)).credentials()
