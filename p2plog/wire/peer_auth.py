"""Peer authentication: a challenge-response over both sides' nonces with the cluster secret.

The handshake, on a link that ``dialer`` opened to ``acceptor``::

    acceptor -> dialer   challenge {nonce: Na}
    dialer -> acceptor   hello {node: dialer, to: acceptor, nonce: Nd,
                                proof: HMAC(K, "hello" | cluster | dialer | acceptor | Na | Nd)}
    acceptor -> dialer   welcome {proof: HMAC(K, "welcome" | cluster | acceptor | dialer | Nd | Na)}

Each side proves it holds the secret ``K`` over a nonce the other side just chose, so a recorded
handshake cannot be replayed; the two proofs carry different labels, so one cannot be reflected
as the other; the ids are inside the MAC, so a member cannot claim another member's id, and the
cluster name is too, so two clusters sharing a secret still refuse each other. The secret never
travels. With TLS the rest of the link is encrypted and integrity-protected by the channel the
handshake ran on; on a plain loopback link a local process could still inject bytes into an
established TCP connection only with privileges that could read the secret anyway.

HMAC-SHA256 (RFC 2104); proofs are compared in constant time. Nonces come from the caller (the
runtime draws them from ``secrets``): this module stays pure.
"""

from __future__ import annotations

import hashlib
import hmac


def _proof(
    secret: bytes, label: bytes, cluster: str, a: str, b: str, n1: bytes, n2: bytes
) -> bytes:
    parts = (label, cluster.encode(), a.encode(), b.encode(), n1, n2)
    # Length-prefixed, so no two different tuples of parts hash the same bytes.
    msg = b"".join(len(p).to_bytes(4, "big") + p for p in parts)
    return hmac.new(secret, msg, hashlib.sha256).digest()


def hello_proof(
    secret: bytes,
    cluster: str,
    dialer: str,
    acceptor: str,
    acceptor_nonce: bytes,
    dialer_nonce: bytes,
) -> bytes:
    return _proof(secret, b"p2plog hello", cluster, dialer, acceptor, acceptor_nonce, dialer_nonce)


def welcome_proof(
    secret: bytes,
    cluster: str,
    dialer: str,
    acceptor: str,
    acceptor_nonce: bytes,
    dialer_nonce: bytes,
) -> bytes:
    return _proof(
        secret, b"p2plog welcome", cluster, acceptor, dialer, dialer_nonce, acceptor_nonce
    )


def same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
