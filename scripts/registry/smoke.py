#!/usr/bin/env python3
"""Smoke check of the registry started by scripts/registry.sh with the real client library.

Serializes one Avro record and one Protobuf message with confluent-kafka's
AvroSerializer / ProtobufSerializer against the registry (they register the schemas
through the Confluent-compatible API and frame the payload in the Confluent wire format),
then reads each schema back by the id found in the frame and deserializes the record.
No broker is needed: serialization only talks to the registry.

Usage: python3 scripts/registry/smoke.py [CCOMPAT_URL]
       (default: the output of `scripts/registry.sh url`; needs confluent-kafka[avro,protobuf,schemaregistry])
Exits non-zero on any mismatch.
"""

import base64
import struct
import subprocess
import sys
from pathlib import Path

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

AVRO_SCHEMA = """{
  "type": "record", "name": "Features", "namespace": "driftscope.smoke",
  "fields": [
    {"name": "age", "type": "double"},
    {"name": "country", "type": ["null", "string"], "default": null}
  ]
}"""


def protobuf_message_class():
    """A Features message class built at run time (no protoc needed)."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="driftscope_smoke.proto", package="driftscope.smoke", syntax="proto3"
    )
    msg = fdp.message_type.add(name="Features")
    msg.field.add(name="age", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
                  label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    msg.field.add(name="country", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                  label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("driftscope.smoke.Features"))


def frame_id(payload: bytes) -> int:
    if len(payload) < 5 or payload[0] != 0:
        raise SystemExit(f"not Confluent wire format: {payload[:8].hex()}")
    return struct.unpack(">I", payload[1:5])[0]


def main() -> int:
    if len(sys.argv) > 1:
        url = sys.argv[1]
    else:
        script = Path(__file__).resolve().parent.parent / "registry.sh"
        url = subprocess.run([str(script), "url"], check=True, capture_output=True, text=True).stdout.strip()
    client = SchemaRegistryClient({"url": url})

    # Avro
    ctx = SerializationContext("driftscope-smoke-avro", MessageField.VALUE)
    record = {"age": 41.5, "country": "PT"}
    avro_bytes = AvroSerializer(client, AVRO_SCHEMA)(record, ctx)
    avro_id = frame_id(avro_bytes)
    print(f"avro: {len(avro_bytes)} bytes, first 5 = {avro_bytes[:5].hex(' ')} (magic 0, schema id {avro_id})")
    back = AvroDeserializer(client)(avro_bytes, ctx)
    if back != record:
        raise SystemExit(f"avro round trip differs: {back!r} != {record!r}")
    fetched = client.get_schema(avro_id)
    print(f"avro: schema {avro_id} fetched back by id ({fetched.schema_type or 'AVRO'}), record round-tripped")

    # Protobuf
    features = protobuf_message_class()
    pctx = SerializationContext("driftscope-smoke-proto", MessageField.VALUE)
    proto_bytes = ProtobufSerializer(features, client, {"use.deprecated.format": False})(
        features(age=41.5, country="PT"), pctx
    )
    proto_id = frame_id(proto_bytes)
    print(f"protobuf: {len(proto_bytes)} bytes, first 6 = {proto_bytes[:6].hex(' ')} "
          f"(magic 0, schema id {proto_id}, message index list [0] as a single 0 byte)")
    pfetched = client.get_schema(proto_id)
    # confluent-kafka registers a Protobuf schema as a base64 FileDescriptorProto, and this
    # registry returns it as stored (a .proto registered as text comes back as text): a
    # reader of the registry must accept both forms.
    form = "text"
    if "message Features" not in pfetched.schema_str:
        fd = descriptor_pb2.FileDescriptorProto()
        fd.ParseFromString(base64.b64decode(pfetched.schema_str, validate=True))
        if [m.name for m in fd.message_type] != ["Features"]:
            raise SystemExit(f"protobuf schema {proto_id} fetched back wrong: {pfetched!r}")
        form = "base64 FileDescriptorProto"
    if pfetched.schema_type != "PROTOBUF":
        raise SystemExit(f"protobuf schema {proto_id} has type {pfetched.schema_type!r}")
    print(f"protobuf: schema {proto_id} fetched back by id ({pfetched.schema_type}, as {form})")
    parsed = features()
    parsed.ParseFromString(proto_bytes[6:])
    if parsed.age != 41.5 or parsed.country != "PT":
        raise SystemExit(f"protobuf payload differs: {parsed!r}")
    # An unknown id is a 404 with Confluent's error code 40403, as a decoder will see it.
    try:
        client.get_schema(987654)
    except SchemaRegistryError as e:
        if e.http_status_code != 404 or e.error_code != 40403:
            raise SystemExit(f"unknown schema id: HTTP {e.http_status_code}, code {e.error_code}") from e
        print(f"unknown id: HTTP {e.http_status_code}, error_code {e.error_code}")
    else:
        raise SystemExit("unknown schema id 987654 was found")
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
