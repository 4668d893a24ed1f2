"""Writes Open Inference Protocol (KServe v2) ModelInferRequest messages to a Kafka topic
the way Seldon Core 2 puts a model's requests on its input topic, for the end-to-end
test of driftscope's `open_inference` format (tests/kafka_open_inference.rs).

The messages are built by tritonclient, which ships the protocol's generated protobuf
types: `tritonclient.grpc.service_pb2.ModelInferRequest` filled with typed `contents`,
and requests made by tritonclient's own request builder from `InferInput`s holding
numpy arrays, which it sends as `raw_input_contents` (BYTES length-prefixed by
`tritonclient.utils.serialize_byte_tensor`). The two alternate message by message.

Rows come from a JSON Lines file (one object per row); every `--batch` rows make one
request with tensors:
  features  FP64  [n, len(--matrix)]  the --matrix columns, in order
  <name>    BYTES [n]                 each --bytes column
  <name>    INT64 [n, 1]              each --int column
The message key is the request id. With --bad, two refused messages follow: a request
cut short (truncated protobuf) and one whose --int tensors are BF16.

  python oip_produce.py --bootstrap HOST:PORT --topic T --rows rows.jsonl \
      --matrix x,y --bytes country --int count [--batch 32] [--bad]
"""

import argparse
import json
import sys

import ml_dtypes
import numpy as np
from confluent_kafka import Producer
from tritonclient.grpc import InferInput, service_pb2
from tritonclient.grpc._utils import _get_inference_request


def typed_request(request_id, rows, matrix, byte_cols, int_cols):
    request = service_pb2.ModelInferRequest(model_name="income", id=request_id)
    tensor = request.inputs.add(name="features", datatype="FP64", shape=[len(rows), len(matrix)])
    tensor.contents.fp64_contents.extend(float(r[c]) for r in rows for c in matrix)
    for col in byte_cols:
        tensor = request.inputs.add(name=col, datatype="BYTES", shape=[len(rows)])
        tensor.contents.bytes_contents.extend(str(r[col]).encode() for r in rows)
    for col in int_cols:
        tensor = request.inputs.add(name=col, datatype="INT64", shape=[len(rows), 1])
        tensor.contents.int64_contents.extend(int(r[col]) for r in rows)
    return request


def raw_request(request_id, rows, matrix, byte_cols, int_cols, int_datatype="INT64"):
    inputs = []
    features = np.array([[float(r[c]) for c in matrix] for r in rows], dtype=np.float64)
    tensor = InferInput("features", list(features.shape), "FP64")
    tensor.set_data_from_numpy(features)
    inputs.append(tensor)
    for col in byte_cols:
        values = np.array([str(r[col]).encode() for r in rows], dtype=np.object_)
        tensor = InferInput(col, [len(rows)], "BYTES")
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    for col in int_cols:
        values = np.array([[int(r[col])] for r in rows], dtype=np.int64)
        if int_datatype == "INT64":
            tensor = InferInput(col, [len(rows), 1], "INT64")
            tensor.set_data_from_numpy(values)
        else:
            # A datatype driftscope does not read (tritonclient takes BF16 from
            # ml_dtypes' bfloat16 arrays).
            tensor = InferInput(col, [len(rows), 1], int_datatype)
            tensor.set_data_from_numpy(values.astype(ml_dtypes.bfloat16))
        inputs.append(tensor)
    return _get_inference_request(
        model_name="income",
        inputs=inputs,
        model_version="",
        request_id=request_id,
        outputs=None,
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=0,
        timeout=None,
        parameters=None,
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rows", required=True)
    parser.add_argument("--matrix", required=True)
    parser.add_argument("--bytes", default="")
    parser.add_argument("--int", default="")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--bad", action="store_true")
    args = parser.parse_args()
    split = lambda s: [c for c in s.split(",") if c]
    matrix, byte_cols, int_cols = split(args.matrix), split(args.bytes), split(args.int)
    with open(args.rows, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]

    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 5})
    failures = []
    report = lambda err, _msg: failures.append(err) if err is not None else None
    messages = 0
    for i in range(0, len(rows), args.batch):
        batch = rows[i : i + args.batch]
        request_id = f"req-{messages:05d}"
        build = typed_request if messages % 2 == 0 else raw_request
        request = build(request_id, batch, matrix, byte_cols, int_cols)
        producer.produce(args.topic, key=request_id, value=request.SerializeToString(), partition=0, on_delivery=report)
        messages += 1
    if args.bad:
        whole = typed_request("bad-truncated", rows[: args.batch], matrix, byte_cols, int_cols).SerializeToString()
        producer.produce(args.topic, key="bad-truncated", value=whole[: len(whole) - 7], partition=0, on_delivery=report)
        bf16 = raw_request("bad-bf16", rows[: args.batch], matrix, byte_cols, int_cols, int_datatype="BF16")
        producer.produce(args.topic, key="bad-bf16", value=bf16.SerializeToString(), partition=0, on_delivery=report)
        messages += 2
    producer.flush(60)
    if failures or len(producer) > 0:
        print(f"oip_produce: {len(failures)} failed, {len(producer)} undelivered: {failures[:3]}", file=sys.stderr)
        return 1
    print(messages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
