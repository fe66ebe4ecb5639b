"""CBOR framing: every websocket message is one CBOR map ``{"v": 1, "kind": str, ...}``."""
