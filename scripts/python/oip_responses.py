"""Writes Open Inference Protocol (KServe v2) ModelInferResponse messages to a Kafka
topic the way a model server puts its responses on an output topic, for the end-to-end
test of labels on `open_inference` streams (tests/kafka_open_inference.rs).

The messages are tritonclient's generated protobuf type,
`tritonclient.grpc.service_pb2.ModelInferResponse`, with the protocol's `id` set. Each
line of the --messages JSON Lines file is one response: {"id": str, "x": [float],
"p": [float]}; its tensors are
  x            FP64 [n]  a monitored feature
  probability  FP32 [n]  the model's score
alternately as typed `contents` and as `raw_output_contents` (numpy's little-endian
bytes, as tritonclient's server side writes them). Every message has the same Kafka
key (--key), so only the protocol's `id` tells the requests apart.

  python oip_responses.py --bootstrap HOST:PORT --topic T --messages m.jsonl --key K
"""

import argparse
import json
import sys

import numpy as np
from confluent_kafka import Producer
from tritonclient.grpc import service_pb2


def response(i, message):
    out = service_pb2.ModelInferResponse(model_name="fraud", id=message["id"])
    n = len(message["p"])
    x = out.outputs.add(name="x", datatype="FP64", shape=[n])
    p = out.outputs.add(name="probability", datatype="FP32", shape=[n])
    if i % 2 == 0:
        x.contents.fp64_contents.extend(float(v) for v in message["x"])
        p.contents.fp32_contents.extend(float(v) for v in message["p"])
    else:
        out.raw_output_contents.append(np.array(message["x"], dtype="<f8").tobytes())
        out.raw_output_contents.append(np.array(message["p"], dtype="<f4").tobytes())
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--messages", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    with open(args.messages, encoding="utf-8") as f:
        messages = [json.loads(line) for line in f if line.strip()]

    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 5})
    failures = []
    report = lambda err, _msg: failures.append(err) if err is not None else None
    for i, message in enumerate(messages):
        value = response(i, message).SerializeToString()
        producer.produce(args.topic, key=args.key, value=value, partition=0, on_delivery=report)
    producer.flush(60)
    if failures or len(producer) > 0:
        print(f"oip_responses: {len(failures)} failed, {len(producer)} undelivered: {failures[:3]}", file=sys.stderr)
        return 1
    print(len(messages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
