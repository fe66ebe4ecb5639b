"""p2plog.security: the cluster CA, node certificates, the secret file and the ssl contexts.

Certificates are judged by real TLS handshakes over loopback (trio), because what matters is
that OpenSSL accepts the right ones and refuses the wrong ones, not how their fields look.
Errors must name the files involved, so the tests match on the paths, not only on the type.
"""

from __future__ import annotations

import os
import re
import ssl
import stat
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from p2plog.errors import ConfigError
from p2plog.security.certs import (
    NodePlan,
    create_cluster_files,
    make_ca,
    make_node_cert,
    write_new,
)
from p2plog.security.tls import client_context, server_context

HOSTS = ("127.0.0.1", "localhost")
HANDSHAKE_FAILED = (ssl.SSLError, trio.BrokenResourceError)
NEEDED_ONLY = "needed only to issue node certificates"


def load_pem_cert_names(pem: bytes) -> tuple[str, list[str]]:
    """(subject common name, subjectAltName entries as text) of a PEM certificate."""
    cert = x509.load_pem_x509_certificate(pem)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(cns[0].value) if cns else ""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return cn, []
    return cn, [str(entry.value) for entry in san]


def write_pair(directory: Path, name: str, pems: tuple[bytes, bytes]) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    write_new(cert, pems[0], private=False)
    write_new(key, pems[1], private=True)
    return cert, key


def plan(directory: Path, node_id: str) -> NodePlan:
    return NodePlan(node_id, HOSTS, directory / f"{node_id}.pem", directory / f"{node_id}.key")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def echo_once(stream: trio.SSLStream[trio.SocketStream]) -> None:
    try:
        async with stream:
            await stream.send_all(await stream.receive_some())
    except trio.BrokenResourceError:
        pass  # a refused handshake: the client side asserts on it


async def roundtrip(
    nursery: trio.Nursery, cert: Path, key: Path, ca: Path, hostname: str | None = None
) -> bytes:
    """Serve ``cert``/``key`` on loopback, dial it trusting ``ca``, echo a few bytes.

    ``hostname`` overrides the name the client checks; open_ssl_over_tcp_stream has no such
    option (it checks the host it dials), so that case wraps a TCP stream the way it does.
    """
    with trio.fail_after(5):
        ctx = server_context(cert, key)
        listeners = await trio.open_ssl_over_tcp_listeners(0, ctx, host="127.0.0.1")
        port = listeners[0].transport_listener.socket.getsockname()[1]
        await nursery.start(trio.serve_listeners, echo_once, listeners)
        if hostname is None:
            stream = await trio.open_ssl_over_tcp_stream(
                "127.0.0.1", port, ssl_context=client_context(ca)
            )
        else:
            tcp = await trio.open_tcp_stream("127.0.0.1", port)
            stream = trio.SSLStream(tcp, client_context(ca), server_hostname=hostname)
        async with stream:
            await stream.send_all(b"ping")
            return await stream.receive_some()


@pytest.fixture
def cluster(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA and node n1's pair on disk: (ca.pem, n1.pem, n1.key)."""
    ca_cert, ca_key = make_ca("test")
    ca_path, _ = write_pair(tmp_path, "ca", (ca_cert, ca_key))
    cert, key = write_pair(tmp_path, "n1", make_node_cert(ca_cert, ca_key, "n1", HOSTS))
    return ca_path, cert, key


def test_names_and_extensions() -> None:
    ca_pem, ca_key = make_ca("test")
    cert_pem, _ = make_node_cert(ca_pem, ca_key, "n1", [*HOSTS, "127.0.0.1", "LOCALHOST"])
    assert load_pem_cert_names(ca_pem) == ("p2plog test CA", [])
    assert load_pem_cert_names(cert_pem) == ("n1", ["127.0.0.1", "localhost"])  # deduped
    ca, leaf = x509.load_pem_x509_certificate(ca_pem), x509.load_pem_x509_certificate(cert_pem)
    ca_bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert ca_bc.critical
    assert ca_bc.value.ca
    assert ca_bc.value.path_length == 0
    leaf_bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert leaf_bc.critical
    assert not leaf_bc.value.ca
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert leaf.issuer == ca.subject
    assert leaf.not_valid_before_utc < ca.not_valid_after_utc
    leaf.verify_directly_issued_by(ca)


def test_bad_hosts_are_refused() -> None:
    ca_pem, ca_key = make_ca("test")
    with pytest.raises(ConfigError, match="host 'n1:7001'"):
        make_node_cert(ca_pem, ca_key, "n1", ["n1:7001"])
    with pytest.raises(ConfigError, match="no hosts"):
        make_node_cert(ca_pem, ca_key, "n1", [])


async def test_handshake_echoes(nursery: trio.Nursery, cluster: tuple[Path, Path, Path]) -> None:
    ca, cert, key = cluster
    assert await roundtrip(nursery, cert, key, ca) == b"ping"


async def test_handshake_fails_for_cert_of_another_ca(
    nursery: trio.Nursery, cluster: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    ca, _, _ = cluster
    other_pem, other_key = make_ca("other")
    cert, key = write_pair(tmp_path, "x1", make_node_cert(other_pem, other_key, "n1", HOSTS))
    with pytest.raises(HANDSHAKE_FAILED):
        await roundtrip(nursery, cert, key, ca)


async def test_handshake_fails_for_name_not_in_san(
    nursery: trio.Nursery, cluster: tuple[Path, Path, Path]
) -> None:
    ca, cert, key = cluster
    with pytest.raises(HANDSHAKE_FAILED):
        await roundtrip(nursery, cert, key, ca, hostname="n2.example")


def test_write_new_never_overwrites_and_sets_modes(tmp_path: Path) -> None:
    secret = tmp_path / "a" / "b" / "secret"
    write_new(secret, b"first\n", private=True)
    assert mode(secret) == 0o600
    with pytest.raises(ConfigError, match=rf"{re.escape(str(secret))}.*remove it first"):
        write_new(secret, b"second\n", private=True)
    assert secret.read_bytes() == b"first\n"
    old = os.umask(0o077)
    try:  # the mode is exact whatever the umask
        write_new(tmp_path / "public.pem", b"x", private=False)
    finally:
        os.umask(old)
    assert mode(tmp_path / "public.pem") == 0o644


def test_create_cluster_files_is_idempotent(tmp_path: Path) -> None:
    ca_cert, ca_key, secret = tmp_path / "ca.pem", tmp_path / "ca.key", tmp_path / "secret"
    nodes = [plan(tmp_path, "n1"), plan(tmp_path, "n2")]
    first = create_cluster_files("test", ca_cert, ca_key, nodes, secret)
    assert [line.split()[0] for line in first] == ["wrote"] * 7
    assert f"keep {ca_key} offline" in first[0]
    files = {p: p.read_bytes() for p in tmp_path.iterdir()}
    assert len(files) == 7
    assert re.fullmatch(rb"[0-9a-f]{64}\n", secret.read_bytes())
    assert {mode(p) for p in (ca_key, secret, nodes[0].key, nodes[1].key)} == {0o600}
    assert load_pem_cert_names(nodes[1].cert.read_bytes()) == ("n2", list(HOSTS))
    second = create_cluster_files("test", ca_cert, ca_key, nodes, secret)
    order = [ca_cert, ca_key, *(p for n in nodes for p in (n.cert, n.key)), secret]
    assert second == [f"kept {p} (exists)" for p in order]
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == files


async def test_new_node_is_issued_by_the_existing_ca(nursery: trio.Nursery, tmp_path: Path) -> None:
    ca_cert, ca_key = tmp_path / "ca.pem", tmp_path / "ca.key"
    create_cluster_files("test", ca_cert, ca_key, [plan(tmp_path, "n1")], None)
    ca_before = ca_cert.read_bytes()
    n2 = plan(tmp_path, "n2")
    lines = create_cluster_files("test", ca_cert, ca_key, [plan(tmp_path, "n1"), n2], None)
    assert lines[:2] == [f"kept {ca_cert} (exists)", f"kept {ca_key} (exists)"]
    assert [line.split()[:2] for line in lines[-2:]] == [
        ["wrote", str(p)] for p in (n2.cert, n2.key)
    ]
    assert ca_cert.read_bytes() == ca_before
    assert await roundtrip(nursery, n2.cert, n2.key, ca_cert) == b"ping"


def test_create_cluster_files_refuses_mismatched_pairs(tmp_path: Path) -> None:
    ca_cert, ca_key = tmp_path / "ca.pem", tmp_path / "ca.key"
    n1, n2 = plan(tmp_path, "n1"), plan(tmp_path, "n2")
    create_cluster_files("test", ca_cert, ca_key, [n1], None)
    n1.key.unlink()
    with pytest.raises(ConfigError) as refused:
        create_cluster_files("test", ca_cert, ca_key, [n1, n2], None)
    assert str(n1.cert) in str(refused.value)
    assert str(n1.key) in str(refused.value)
    assert not n2.cert.exists()  # checked before anything was written
    n1.cert.unlink()
    ca_key.unlink()  # kept offline: fine until a certificate must be issued
    with pytest.raises(ConfigError, match=re.escape(str(ca_key))):
        create_cluster_files("test", ca_cert, ca_key, [n1], None)
    assert not n1.key.exists()
    lines = create_cluster_files("test", ca_cert, ca_key, [], None)
    assert lines == [f"kept {ca_cert} (exists)", f"skipped {ca_key} (absent; {NEEDED_ONLY})"]


def test_server_context_names_the_files(tmp_path: Path, cluster: tuple[Path, Path, Path]) -> None:
    ca, cert, _ = cluster
    ca_pem, ca_key = make_ca("test")
    _, other_key = write_pair(tmp_path, "n2", make_node_cert(ca_pem, ca_key, "n2", HOSTS))
    with pytest.raises(ConfigError) as mismatch:
        server_context(cert, other_key)
    assert str(cert) in str(mismatch.value)
    assert str(other_key) in str(mismatch.value)
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "missing.key"))):
        server_context(cert, tmp_path / "missing.key")
    with pytest.raises(ConfigError, match=re.escape(str(other_key))):
        client_context(other_key)  # a key is not a CA certificate
    assert client_context(ca).verify_mode == ssl.CERT_REQUIRED
