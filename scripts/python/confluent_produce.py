"""Writes test messages to Kafka the way a schema-managed pipeline does: through
confluent-kafka's AvroSerializer or ProtobufSerializer and its schema registry client
(the schemas are registered by the serializer, as in production). Used by
tests/kafka_avro.rs and tests/kafka_protobuf.rs; run with the test venv's Python
(scripts/test-venv.sh).

    confluent_produce.py --bootstrap B --registry URL --topic T --format avro \
        --phase SCHEMA_FILE:ROWS_FILE [--phase ...]

Each phase writes the rows of ROWS_FILE (JSON Lines) with the schema of SCHEMA_FILE,
in order, to partition 0. For Avro the schema file is an .avsc; for Protobuf it is a
JSON description of one proto2 message (all fields optional, so an absent value has
presence semantics): {"package": "p", "message": "M", "fields": [[name, type, number],
...]} with types double, int64, int32, string, or "message:Name" with a nested
{"messages": {"Name": [[name, type, number], ...]}}. A row's nested object fills a
nested message. Prints one JSON line: the schema id each phase's messages carry.
"""

import argparse
import json
import sys
import time

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext


def avro_serializer(client, schema_text):
    from confluent_kafka.schema_registry.avro import AvroSerializer

    return AvroSerializer(client, schema_text, conf={"auto.register.schemas": True}), lambda row: row


def protobuf_serializer(client, spec):
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from confluent_kafka.schema_registry.protobuf import ProtobufSerializer

    types = {
        "double": descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
        "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
        "int32": descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
        "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    }
    package = spec["package"]
    file = descriptor_pb2.FileDescriptorProto(name=spec["file"], package=package, syntax="proto2")

    def add_fields(message, fields):
        for name, ty, number in fields:
            field = message.field.add(name=name, number=number)
            field.label = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
            if ty.startswith("message:"):
                field.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
                field.type_name = "." + package + "." + ty.split(":", 1)[1]
            else:
                field.type = types[ty]

    for name, fields in spec.get("messages", {}).items():
        add_fields(file.message_type.add(name=name), fields)
    add_fields(file.message_type.add(name=spec["message"]), spec["fields"])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(package + "." + spec["message"]))

    def to_message(row):
        msg = cls()
        fill(msg, row)
        return msg

    def fill(msg, row):
        for key, value in row.items():
            if value is None:
                continue
            if isinstance(value, dict):
                fill(getattr(msg, key), value)
            else:
                setattr(msg, key, value)

    serializer = ProtobufSerializer(cls, client, {"use.deprecated.format": False, "auto.register.schemas": True})
    return serializer, to_message


def serialize(serializer, row, context):
    """One value through the serializer. A 409 from the registry's first registration of a
    subject (Apicurio answers it when two creations of the subject race, e.g. the
    client's own retry of a slow first request) is tried again: by then the subject
    exists and registering the same schema returns its id."""
    for attempt in range(5):
        try:
            return serializer(row, context)
        except SchemaRegistryError as e:
            if e.http_status_code != 409 or attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--format", choices=["avro", "protobuf"], required=True)
    parser.add_argument("--phase", action="append", required=True)
    args = parser.parse_args()

    client = SchemaRegistryClient({"url": args.registry})
    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 5})
    context = SerializationContext(args.topic, MessageField.VALUE)
    ids = []
    for phase in args.phase:
        schema_path, rows_path = phase.split(":", 1)
        with open(schema_path) as f:
            schema = f.read()
        if args.format == "avro":
            serializer, convert = avro_serializer(client, schema)
        else:
            serializer, convert = protobuf_serializer(client, json.loads(schema))
        phase_ids = set()
        with open(rows_path) as f:
            for line in f:
                if not line.strip():
                    continue
                value = serialize(serializer, convert(json.loads(line)), context)
                phase_ids.add(int.from_bytes(value[1:5], "big"))
                producer.produce(args.topic, value=value, partition=0)
                producer.poll(0)
        ids.append(sorted(phase_ids))
    if producer.flush(30) != 0:
        print("messages left unsent after 30 s", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"schema_ids": ids}))


if __name__ == "__main__":
    main()
