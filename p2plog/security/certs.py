"""The files a TLS-enabled cluster needs: a CA, one certificate + key per node, a secret.

Keys are ECDSA P-256: fast to generate and to handshake with, and accepted by browsers (Ed25519
is not). Certificates are signed with SHA-256 and start one hour in the past, so a host whose
clock lags the issuing host's still accepts them.

Invariants:

- An existing file is never overwritten (``O_CREAT | O_EXCL``): running ``create_cluster_files``
  again only adds what is missing and keeps everything else byte for byte.
- No certificate without its key, no kept node certificate the CA did not issue or whose key
  does not match it: each such state is refused (``ConfigError``) before anything is written.
- Private keys are unencrypted PKCS#8 (a node must start unattended) in mode 0600 files; a file
  that failed to write completely is removed, so a later run never keeps a truncated key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from p2plog.errors import ConfigError
from p2plog.storage.meta import fsync_dir, write_all_fsync

SKEW = dt.timedelta(hours=1)  # not_valid_before is backdated by this much (clock skew)
# A bare host name (no port, no scheme), optionally a wildcard; IDNs must come as A-labels.
DNS_NAME = re.compile(r"(\*\.)?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")

KEY_USAGE_BITS = (
    *("digital_signature", "content_commitment", "key_encipherment", "data_encipherment"),
    *("key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"),
)

# Both: nodes are servers to the peers that dial them and clients of the peers they dial.
NODE_EKU = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])


@dataclass(frozen=True, slots=True)
class NodePlan:
    """One node's certificate request: its id, the names it is dialled by, where its files go."""

    node_id: str
    hosts: tuple[str, ...]
    cert: Path
    key: Path


def make_ca(cluster: str, *, days: int = 3650) -> tuple[bytes, bytes]:
    """A self-signed CA for ``cluster``: (certificate PEM, unencrypted private key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"p2plog {cluster} CA")
    cert = (
        _builder(name, name, key, days, None)
        # path_length=0: this CA signs node certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage("key_cert_sign", "crl_sign"), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.PEM), _key_pem(key)


def make_node_cert(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    node_id: str,
    hosts: Sequence[str],
    *,
    days: int = 825,
) -> tuple[bytes, bytes]:
    """A certificate for ``node_id`` valid for ``hosts``, signed by the CA: (cert PEM, key PEM).

    It is valid for both server and client authentication, because nodes dial each other. It
    never outlives the CA: a leaf past its issuer's expiry could not be verified anyway.
    """
    ca_cert, ca_key = _load_ca(ca_cert_pem, ca_key_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    ca_expiry = ca_cert.not_valid_after_utc
    if ca_expiry <= dt.datetime.now(dt.UTC):
        raise ConfigError(
            f"the CA certificate expired on {ca_expiry:%Y-%m-%d}; create a new CA and issue "
            "every node certificate again"
        )
    cert = (
        _builder(_name(node_id), ca_cert.subject, key, days, ca_expiry)
        .add_extension(x509.SubjectAlternativeName(_sans(node_id, hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # keyAgreement: the key may also be used for static ECDH, not only for signatures.
        .add_extension(_key_usage("digital_signature", "key_agreement"), critical=True)
        .add_extension(NODE_EKU, critical=False)
        .add_extension(_authority_key_id(ca_cert, ca_key), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.PEM), _key_pem(key)


def new_secret() -> bytes:
    """The content of a new cluster secret file: 32 random bytes as hex, newline-terminated."""
    return secrets.token_hex(32).encode("ascii") + b"\n"


def write_new(path: Path, data: bytes, *, private: bool) -> None:
    """Create ``path`` holding ``data`` and fsync it; refuse if it exists (never overwrite).

    ``private`` files get mode 0600, others 0644, set exactly whatever the umask. A failed write
    removes the file: we created it (``O_EXCL``), and a truncated key must not be kept later.
    """
    mode = 0o600 if private else 0o644
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError as e:
        if Path(e.filename) != path:  # from mkdir: a parent exists but is not a directory
            raise ConfigError(f"{e.filename} is not a directory; fix the path {path}") from e
        raise ConfigError(
            f"{path} already exists and was left unchanged; remove it first if a new one is "
            "really wanted"
        ) from e
    except OSError as e:
        raise ConfigError(
            f"{e.filename}: cannot create it ({e.strerror}); check the path and its permissions"
        ) from e
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have cleared bits of a public file's mode
            write_all_fsync(fd, data)
        finally:
            os.close(fd)
        fsync_dir(path.parent)  # the new directory entry must survive a crash too
    except OSError as e:
        path.unlink(missing_ok=True)
        raise ConfigError(
            f"{path}: writing failed ({e.strerror}) and the partial file was removed; fix the "
            "cause (disk full? read-only volume?) and run again"
        ) from e


def create_cluster_files(
    cluster: str,
    ca_cert: Path,
    ca_key: Path,
    nodes: Sequence[NodePlan],
    secret: Path | None,
) -> list[str]:
    """Create whichever of the cluster's files do not exist yet; one human line per file.

    Everything is checked before the first write, so a refused run changes nothing. The CA key
    is needed only while a node certificate is to be issued: it may be kept offline otherwise.
    """
    _check_distinct([ca_cert, ca_key, secret, *(p for n in nodes for p in (n.cert, n.key))])
    issue = {node.node_id for node in nodes if not node.cert.exists()}
    existing = _check_existing(ca_cert, ca_key, nodes, need_key=bool(issue))
    for node in nodes:  # a bad name must be refused now, not after the CA has been written
        if node.node_id in issue:
            _name(node.node_id)
            _sans(node.node_id, node.hosts)
    lines: list[str] = []
    if existing is None:
        ca_cert_pem, ca_key_pem = make_ca(cluster)
        write_new(ca_key, ca_key_pem, private=True)  # key first: a key alone is harmless
        write_new(ca_cert, ca_cert_pem, private=False)
        offline = f"keep {ca_key} offline: it can issue node certificates"
        lines += [f"wrote {ca_cert} (cluster CA; {offline})", f"wrote {ca_key} (CA key, mode 0600)"]
    else:
        ca_cert_pem, found_key = existing
        ca_key_pem = found_key or b""  # b"" only if nothing is to be issued (checked)
        lines.append(f"kept {ca_cert} (exists)")
        absent = f"skipped {ca_key} (absent; needed only to issue node certificates)"
        lines.append(f"kept {ca_key} (exists)" if found_key is not None else absent)
    for node in nodes:
        if node.node_id not in issue:
            lines += [f"kept {node.cert} (exists)", f"kept {node.key} (exists)"]
            continue
        cert_pem, key_pem = make_node_cert(ca_cert_pem, ca_key_pem, node.node_id, node.hosts)
        write_new(node.key, key_pem, private=True)
        write_new(node.cert, cert_pem, private=False)
        lines.append(f"wrote {node.cert} (node {node.node_id}: {', '.join(node.hosts)})")
        lines.append(f"wrote {node.key} (node {node.node_id} private key, mode 0600)")
    if secret is not None and secret.exists():
        lines.append(f"kept {secret} (exists)")
    elif secret is not None:
        write_new(secret, new_secret(), private=True)
        lines.append(f"wrote {secret} (cluster secret, mode 0600; copy it to every node)")
    return lines


def _check_distinct(paths: Sequence[Path | None]) -> None:
    """Two roles sharing one path would make the second write fail halfway through a run."""
    seen: set[Path] = set()
    for path in filter(None, paths):
        if path.resolve() in seen:
            raise ConfigError(f"{path} is given for two files; give every file its own path")
        seen.add(path.resolve())


def _check_existing(
    ca_cert: Path, ca_key: Path, nodes: Sequence[NodePlan], *, need_key: bool
) -> tuple[bytes, bytes | None] | None:
    """Refuse every mismatched existing state; the existing CA (key None if absent) or None."""
    for node in nodes:
        if node.cert.exists() != node.key.exists():
            have, missing = (node.cert, node.key) if node.cert.exists() else (node.key, node.cert)
            raise ConfigError(
                f"{have} exists but {missing} does not (node {node.node_id}): restore {missing}, "
                f"or remove {have} to issue a new pair"
            )
    if not ca_cert.exists():
        if ca_key.exists():
            raise ConfigError(
                f"{ca_key} exists but {ca_cert} does not: restore the CA certificate, or remove "
                f"{ca_key} to create a new CA"
            )
        for node in nodes:
            if node.cert.exists():
                raise ConfigError(
                    f"{node.cert} exists but its CA {ca_cert} does not: restore {ca_cert} and "
                    f"{ca_key}, or remove {node.cert} and {node.key} to issue a new pair"
                )
        return None
    cert_pem = _read(ca_cert)
    key_pem = _read(ca_key) if ca_key.exists() else None
    if need_key and key_pem is None:
        raise ConfigError(
            f"{ca_key} does not exist, and new node certificates must be issued by the CA "
            f"{ca_cert}: bring the CA key back (from where it is kept offline), or remove "
            f"{ca_cert} to create a new CA (and issue every node certificate again)"
        )
    ca = _parse_cert(cert_pem, str(ca_cert))
    if key_pem is not None:
        try:
            _load_ca(cert_pem, key_pem)
        except ConfigError as e:
            raise ConfigError(f"{ca_cert} / {ca_key}: {e}") from e
    for node in nodes:
        if node.cert.exists():
            _check_node_pair(node, ca, ca_cert)
    return cert_pem, key_pem


def _check_node_pair(node: NodePlan, ca: x509.Certificate, ca_path: Path) -> None:
    """A kept node certificate must be issued by ``ca`` and match its key."""
    cert = _parse_cert(_read(node.cert), str(node.cert))
    fix = f"remove {node.cert} and {node.key} to issue a new pair"
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as e:  # all three mean "not by ca"
        raise ConfigError(f"{node.cert} was not issued by the CA {ca_path}; {fix}") from e
    key = _parse_key(_read(node.key), str(node.key))
    if key.public_key() != cert.public_key():
        raise ConfigError(f"{node.key} is not the key of {node.cert}; {fix}")


def _load_ca(
    cert_pem: bytes, key_pem: bytes
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = _parse_cert(cert_pem, "the CA certificate")
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ConfigError("the CA certificate is not a CA certificate; give the one make_ca wrote")
    key = _parse_key(key_pem, "the CA key")
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError("the CA key is not an ECDSA key; give the key make_ca wrote")
    if key.public_key() != cert.public_key():
        raise ConfigError("the CA key is not the CA certificate's key; give the matching pair")
    return cert, key


def _parse_cert(pem: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as e:
        raise ConfigError(f"{what} is not a PEM certificate ({e}); give the file as written") from e


def _parse_key(pem: bytes, what: str) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except TypeError as e:  # raised for an encrypted key when no password is given
        raise ConfigError(f"{what} is encrypted; p2plog needs it unencrypted (mode 0600)") from e
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ConfigError(f"{what} is not a PEM private key ({e}); give the file as written") from e


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror}); check its permissions") from e


def _sans(node_id: str, hosts: Sequence[str]) -> list[x509.GeneralName]:
    """IP entries for IP literals, DNS entries otherwise; duplicates dropped, order kept."""
    names: list[x509.GeneralName] = []
    entry: x509.GeneralName
    seen: set[str] = set()
    for host in hosts:
        try:  # "[::1]" is how IPv6 literals appear in addresses
            ip = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
        except ValueError:
            if not DNS_NAME.fullmatch(host):
                raise ConfigError(
                    f"node {node_id!r}: host {host!r} is neither an IP address nor a host name; "
                    "give a bare name (no port; IDNs as xn-- A-labels) or an IP address"
                ) from None
            key, entry = f"dns:{host.lower()}", x509.DNSName(host)  # DNS names ignore case
        else:
            key, entry = f"ip:{ip}", x509.IPAddress(ip)
        if key not in seen:
            seen.add(key)
            names.append(entry)
    if not names:
        raise ConfigError(f"node {node_id!r} has no hosts; give the names and IPs it is dialled by")
    return names


def _authority_key_id(
    ca: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:  # a CA made elsewhere: derive the id from its key
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _key_usage(*on: str) -> x509.KeyUsage:
    """A KeyUsage with exactly the bits named in ``on`` set (x509.KeyUsage takes all nine)."""
    assert set(on) <= set(KEY_USAGE_BITS), f"unknown KeyUsage bits {on}"
    return x509.KeyUsage(**{bit: bit in on for bit in KEY_USAGE_BITS})


def _name(common_name: str) -> x509.Name:
    if not 1 <= len(common_name) <= 64:  # RFC 5280's ub-common-name
        raise ConfigError(
            f"certificate name {common_name!r} has {len(common_name)} characters but X.509 "
            f"allows 1 to 64; use a shorter cluster name or node id"
        )
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    days: int,
    not_after_max: dt.datetime | None,
) -> x509.CertificateBuilder:
    """Names, public key, random serial, validity (backdated by SKEW) and SubjectKeyIdentifier."""
    if days < 1:
        raise ConfigError(f"a certificate must be valid for at least 1 day, not {days}")
    now = dt.datetime.now(dt.UTC)
    not_after = now + dt.timedelta(days=days)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - SKEW)
        .not_valid_after(not_after if not_after_max is None else min(not_after, not_after_max))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
