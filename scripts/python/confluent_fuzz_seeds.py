"""Writes seed inputs of the `avro` and `protobuf` fuzz targets (fuzz/src/lib.rs) with
the real libraries: fastavro for Avro, protobuf (compiled from the target's schema
text at run time is not possible in Python without protoc, so the message type is
built as a descriptor here, field for field as in PROTOBUF_SCHEMA). Each seed is
Confluent-framed with the schema id the target registers. Run with the test venv's
Python: confluent_fuzz_seeds.py OUT_DIR  (writes OUT_DIR/avro/ and OUT_DIR/protobuf/).
"""

import io
import json
import os
import struct
import sys

import fastavro
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

AVRO_1 = {"type": "record", "name": "F", "namespace": "fz", "fields": [
    {"name": "id", "type": "string"},
    {"name": "age", "type": "int"},
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "user", "type": ["null", {"type": "record", "name": "U", "fields": [
        {"name": "country", "type": "string"},
        {"name": "extra", "type": {"type": "map", "values": "double"}}]}]},
    {"name": "income", "type": ["null", "double"]},
    {"name": "plan", "type": {"type": "enum", "name": "P", "symbols": ["FREE", "PRO"]}},
    {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    {"name": "flag", "type": "boolean"},
    {"name": "ratio", "type": "float"},
    {"name": "hash", "type": {"type": "fixed", "name": "H", "size": 4}},
    {"name": "blob", "type": "bytes"},
    {"name": "nulls", "type": {"type": "array", "items": "null"}}]}
AVRO_2 = {"type": "record", "name": "L", "fields": [
    {"name": "age", "type": "long"}, {"name": "next", "type": ["null", "L"]}]}


def framed(schema_id, body, indexes=b""):
    return b"\x00" + struct.pack(">I", schema_id) + indexes + body


def avro(schema, record):
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def avro_seeds():
    base = {"id": "a", "age": 42, "tags": ["x", "y"], "user": {"country": "DE", "extra": {"k": 1.5}},
            "income": 1234.5, "plan": "PRO", "ts": 1_700_000_000_000_000, "flag": True, "ratio": 0.25,
            "hash": b"abcd", "blob": b"\x00\x01", "nulls": [None, None]}
    yield framed(1, avro(AVRO_1, base))
    yield framed(1, avro(AVRO_1, dict(base, user=None, income=None, tags=[], nulls=[])))
    yield framed(1, avro(AVRO_1, dict(base, age=-7, plan="FREE", flag=False, ratio=float("nan"))))
    yield framed(2, avro(AVRO_2, {"age": 1, "next": {"age": 2, "next": {"age": 3, "next": None}}}))
    yield framed(2, avro(AVRO_2, {"age": 1, "next": None}))


def protobuf_class():
    f = descriptor_pb2.FileDescriptorProto(name="fz.proto", package="fz", syntax="proto3",
                                           dependency=["google/protobuf/timestamp.proto"])
    other = f.message_type.add(name="Other")
    other.field.add(name="unused", number=1, type=5, label=1)
    m = f.message_type.add(name="Features")
    T = descriptor_pb2.FieldDescriptorProto
    for name, number, ty, label, type_name in [
        ("id", 1, T.TYPE_STRING, T.LABEL_OPTIONAL, None),
        ("age", 2, T.TYPE_INT64, T.LABEL_OPTIONAL, None),
        ("user", 3, T.TYPE_MESSAGE, T.LABEL_OPTIONAL, ".fz.Features.User"),
        ("plan", 5, T.TYPE_ENUM, T.LABEL_OPTIONAL, ".fz.Features.Plan"),
        ("tags", 6, T.TYPE_STRING, T.LABEL_REPEATED, None),
        ("ts", 7, T.TYPE_MESSAGE, T.LABEL_OPTIONAL, ".google.protobuf.Timestamp"),
        ("ratio", 8, T.TYPE_FLOAT, T.LABEL_OPTIONAL, None),
        ("flag", 9, T.TYPE_BOOL, T.LABEL_OPTIONAL, None),
        ("delta", 10, T.TYPE_SINT32, T.LABEL_OPTIONAL, None),
        ("hash", 11, T.TYPE_FIXED64, T.LABEL_OPTIONAL, None),
    ]:
        field = m.field.add(name=name, number=number, type=ty, label=label)
        if type_name:
            field.type_name = type_name
    income = m.field.add(name="income", number=4, type=T.TYPE_DOUBLE, label=T.LABEL_OPTIONAL,
                         proto3_optional=True, oneof_index=0)
    m.oneof_decl.add(name="_income")
    user = m.nested_type.add(name="User")
    user.field.add(name="country", number=1, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    plan = m.enum_type.add(name="Plan")
    plan.value.add(name="FREE", number=0)
    plan.value.add(name="PRO", number=1)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(f)
    del income
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("fz.Features"))


def protobuf_seeds():
    cls = protobuf_class()
    m = cls(id="a", age=42, plan=1, tags=["x"], ratio=0.5, flag=True, delta=-3, hash=7, income=12.5)
    m.user.country = "DE"
    m.ts.seconds = 1_700_000_000
    m.ts.nanos = 5_000_000
    # Message index [1]: count 1, index 1, zigzag varints.
    yield framed(1, m.SerializeToString(), b"\x02\x02")
    yield framed(1, cls(id="b").SerializeToString(), b"\x02\x02")
    yield framed(1, cls(age=-1, plan=5).SerializeToString(), b"\x02\x02")
    yield framed(1, b"\x08\x01", b"\x00")
    big = cls(tags=["t"] * 20, id="x" * 100)
    big.user.country = "JP"
    yield framed(1, big.SerializeToString(), b"\x02\x02")


def main():
    out = sys.argv[1]
    for target, seeds in [("avro", avro_seeds()), ("protobuf", protobuf_seeds())]:
        os.makedirs(os.path.join(out, target), exist_ok=True)
        for i, seed in enumerate(seeds):
            with open(os.path.join(out, target, "seed-%02d.bin" % i), "wb") as f:
                f.write(seed)


if __name__ == "__main__":
    main()
