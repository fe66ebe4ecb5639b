"""ssl contexts for p2plog's TLS listeners and dialers, from the files ``certs`` writes.

Both sides require TLS 1.2 or newer. A client trusts only the cluster CA it is given (never the
system store: any public CA could then vouch for a "node") and always checks the host name
against the certificate's subjectAltName. Every failure to load a file is a ``ConfigError``
naming the file and the fix, raised when the context is built, so a node with a bad path fails
at startup instead of at its first handshake.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from p2plog.errors import ConfigError

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context presenting ``cert`` (PEM, chain allowed) with its private ``key``."""
    for path in (cert, key):
        _check_readable(path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MINIMUM_VERSION

    def refuse_password() -> bytes:  # without it OpenSSL would prompt on the terminal
        raise ConfigError(f"{key} is encrypted; p2plog needs it unencrypted (and mode 0600)")

    try:
        ctx.load_cert_chain(cert, key, password=refuse_password)
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"{key} is not the private key of {cert}; give the key written together with "
                "this certificate (or issue a new pair)"
            ) from e
        # Name the file at fault: the certificate if it does not load on its own.
        bad, what = (key, "private key") if _is_certificate(cert) else (cert, "certificate")
        raise ConfigError(
            f"{bad}: not a usable PEM {what} ({e}); give the node's PEM files as they were "
            f"written (certificate {cert}, key {key})"
        ) from e
    return ctx


def client_context(ca: Path) -> ssl.SSLContext:
    """A client context that trusts only the CA certificate(s) in ``ca`` and checks host names."""
    _check_readable(ca)
    try:
        ctx = ssl.create_default_context(cafile=ca)
    except ssl.SSLError as e:
        raise ConfigError(
            f"{ca}: holds no PEM certificate ({e}); give the cluster's CA certificate in PEM "
            "form (the file written together with the node certificates)"
        ) from e
    ctx.minimum_version = MINIMUM_VERSION
    # create_default_context sets both already; set them anyway so no default change loosens them.
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _check_readable(path: Path) -> None:
    """ssl reports a missing file as a bare errno: name the file and the fix instead."""
    try:
        with path.open("rb"):
            pass
    except OSError as e:
        raise ConfigError(
            f"{path}: cannot read it ({e.strerror}); check the path, or create the cluster's "
            "certificates first"
        ) from e


def _is_certificate(path: Path) -> bool:
    """Whether ``path`` holds at least one PEM certificate."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError:
        return False
    return True
