"""Protobuf messages that no installed package ships: Loki's push request and google.rpc.Status.

Built at import from descriptors (``descriptor_pb2``) into their own pool, so the decoding is
protobuf's own (the ``upb`` C parser: range and type checks, unknown fields skipped, nesting
bounded) rather than a hand-written wire reader. Field numbers follow Loki's
``pkg/push/push.proto`` (package ``logproto``) and googleapis' ``google/rpc/status.proto``; the
OTLP messages come from the ``opentelemetry-proto`` package.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

_F = descriptor_pb2.FieldDescriptorProto


def _field(
    name: str, number: int, kind: Any, *, repeated: bool = False, type_name: str = ""
) -> Any:
    f = _F(name=name, number=number, type=kind)
    f.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    if type_name:
        f.type_name = type_name
    return f


def _message(name: str, *fields: Any) -> descriptor_pb2.DescriptorProto:
    m = descriptor_pb2.DescriptorProto(name=name)
    m.field.extend(fields)
    return m


def _loki_push_file() -> descriptor_pb2.FileDescriptorProto:
    """Loki's ``pkg/push/push.proto`` (package ``logproto``), the fields a push carries."""
    push = descriptor_pb2.FileDescriptorProto(
        name="p2plog/loki_push.proto",
        package="logproto",
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"],
    )
    msg, many = _F.TYPE_MESSAGE, {"repeated": True}
    push.message_type.extend(
        [
            _message(
                "PushRequest",
                _field("streams", 1, msg, **many, type_name=".logproto.StreamAdapter"),
            ),
            _message(
                "StreamAdapter",
                _field("labels", 1, _F.TYPE_STRING),
                _field("entries", 2, msg, **many, type_name=".logproto.EntryAdapter"),
                _field("hash", 3, _F.TYPE_UINT64),
            ),
            _message(
                "LabelPairAdapter",
                _field("name", 1, _F.TYPE_STRING),
                _field("value", 2, _F.TYPE_STRING),
            ),
            _message(
                "EntryAdapter",
                _field("timestamp", 1, msg, type_name=".google.protobuf.Timestamp"),
                _field("line", 2, _F.TYPE_STRING),
                _field(
                    "structuredMetadata", 3, msg, **many, type_name=".logproto.LabelPairAdapter"
                ),
            ),
        ]
    )
    return push


def _build() -> dict[str, Any]:
    pool = descriptor_pool.DescriptorPool()
    ts = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(ts)
    pool.Add(ts)
    pool.Add(_loki_push_file())
    status = descriptor_pb2.FileDescriptorProto(
        name="p2plog/rpc_status.proto", package="google.rpc", syntax="proto3"
    )
    status.message_type.extend(
        [_message("Status", _field("code", 1, _F.TYPE_INT32), _field("message", 2, _F.TYPE_STRING))]
    )
    pool.Add(status)
    names = (
        "logproto.PushRequest",
        "logproto.StreamAdapter",
        "logproto.EntryAdapter",
        "logproto.LabelPairAdapter",
        "google.rpc.Status",
    )
    return {
        n.rsplit(".", 1)[1]: message_factory.GetMessageClass(pool.FindMessageTypeByName(n))
        for n in names
    }


_CLASSES = _build()
PushRequest: Any = _CLASSES["PushRequest"]
StreamAdapter: Any = _CLASSES["StreamAdapter"]
EntryAdapter: Any = _CLASSES["EntryAdapter"]
LabelPairAdapter: Any = _CLASSES["LabelPairAdapter"]
Status: Any = _CLASSES["Status"]
