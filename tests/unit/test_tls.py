"""TLS and mutual TLS from PEM files, with certificates made at test time by openssl."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest
from doubles import FakeEngine
from grpc_health.v1 import health_pb2, health_pb2_grpc
from servers import in_process_server

from genai_core.config import ConfigError, parse_config


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    key, cert = d / f"{name}.key", d / f"{name}.pem"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
            "-days", "1", "-subj", f"/CN={name}")
    return key, cert


def make_leaf(d: Path, name: str, ca_key: Path, ca_cert: Path) -> tuple[Path, Path]:
    key, csr, cert, ext = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem", d / f"{name}.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(cert), "-days", "1", "-extfile", str(ext))
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca = make_ca(d, "ca")
    rogue_key, rogue_ca = make_ca(d, "rogue-ca")
    server_key, server_cert = make_leaf(d, "server", ca_key, ca)
    client_key, client_cert = make_leaf(d, "client", ca_key, ca)
    rogue_client_key, rogue_client_cert = make_leaf(d, "rogue-client", rogue_key, rogue_ca)
    return dict(ca=ca, server_key=server_key, server_cert=server_cert, client_key=client_key,
                client_cert=client_cert, rogue_key=rogue_client_key, rogue_cert=rogue_client_cert)


def health_check(port: int, credentials: grpc.ChannelCredentials | None) -> int:
    target = f"localhost:{port}"
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    with channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def tls_config(pki: dict[str, Path], mutual: bool) -> object:
    tls = {"cert_file": str(pki["server_cert"]), "key_file": str(pki["server_key"])}
    if mutual:
        tls.update(client_ca_file=str(pki["ca"]), require_client_auth=True)
    return parse_config({"server": {"host": "127.0.0.1", "port": 0, "tls": tls}})


def test_tls_serves_trusting_clients_only(pki: dict[str, Path]) -> None:
    with in_process_server(FakeEngine(lambda r: ""), tls_config(pki, mutual=False)) as (_, running):  # type: ignore[arg-type]
        trusted = grpc.ssl_channel_credentials(root_certificates=pki["ca"].read_bytes())
        assert health_check(running.port, trusted) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError):
            health_check(running.port, None)  # plaintext client


def test_mutual_tls_refuses_clients_without_the_right_certificate(pki: dict[str, Path]) -> None:
    root = pki["ca"].read_bytes()
    with in_process_server(FakeEngine(lambda r: ""), tls_config(pki, mutual=True)) as (_, running):  # type: ignore[arg-type]
        good = grpc.ssl_channel_credentials(root, pki["client_key"].read_bytes(), pki["client_cert"].read_bytes())
        assert health_check(running.port, good) == health_pb2.HealthCheckResponse.SERVING
        for bad in (
            grpc.ssl_channel_credentials(root),  # no client certificate
            grpc.ssl_channel_credentials(root, pki["rogue_key"].read_bytes(), pki["rogue_cert"].read_bytes()),
        ):
            with pytest.raises(grpc.RpcError) as info:
                health_check(running.port, bad)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_config_checked_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"server": {"tls": {"cert_file": str(tmp_path / "missing.pem")}}})
    text = str(info.value)
    assert "server.tls.cert_file: no such file" in text and "set both or neither" in text
