"""metrics.jsonl records without the wall-clock fields (for bit-exact comparisons)."""

import os

from msa_jax.training.metrics import read_jsonl

TIMING = ("tokens_per_s",)


def comparable_records(workdir: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING}
            for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))]


def event_steps(logdir: str, tag: str) -> list[int]:
    """Steps of every `tag` scalar in the TensorBoard event files under logdir, read as TFRecords
    (length, masked crc, event proto, masked crc); a record with a bad checksum is an error."""
    import struct

    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c

    steps = []
    for name in sorted(os.listdir(logdir)):
        with open(os.path.join(logdir, name), "rb") as f:
            data = f.read()
        at = 0
        while at < len(data):
            header = data[at:at + 8]
            (n,) = struct.unpack("Q", header)
            body = data[at + 12:at + 12 + n]
            (crc,) = struct.unpack("I", data[at + 12 + n:at + 16 + n])
            assert crc == masked_crc32c(body), f"{name}: corrupt record at byte {at}"
            at += 16 + n
            event = Event.FromString(body)
            steps += [event.step for v in event.summary.value if v.tag == tag]
    return steps
