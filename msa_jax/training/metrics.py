"""Per-step metrics to JSONL and TensorBoard event files (tensorboardX), resume-aware.

`workdir/metrics.jsonl` gets one JSON object per logged step ({"step": n, name: value, ...});
`workdir/tensorboard/` gets the same scalars as TensorBoard events. On resume from step s the
records of later steps (written before the run was killed, and about to be recomputed) are
dropped: the JSONL file is rewritten atomically without them, and the event writer purges them
(`purge_step`), so both logs read as one uninterrupted run. In a run of several processes only
the primary one writes (`enabled=False` elsewhere: one log, not one per process).
"""

from __future__ import annotations

import json
import os
from typing import Mapping

from msa_jax.utils import atomic_write_bytes


def read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill: the rest was never complete
    return out


class MetricsWriter:
    def __init__(self, workdir: str, resume_step: int = 0, tensorboard: bool = True,
                 enabled: bool = True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = enabled
        self._file = self._tb = None
        if not enabled:  # writes nothing (a process that is not the primary one)
            return
        os.makedirs(workdir, exist_ok=True)
        kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= resume_step]
        atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        self._file = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            from tensorboardX import SummaryWriter

            # tensorboardX names the file by the second it is opened (and truncates a file of
            # that name): the suffix keeps a resume within the same second from erasing the
            # events written before it
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"),
                                     purge_step=resume_step + 1 if resume_step else None,
                                     filename_suffix=f".from{resume_step}")

    def write(self, step: int, values: Mapping[str, float]):
        if self._file is None:
            return
        record = {"step": int(step), **{k: float(v) for k, v in values.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for name, value in record.items():
                if name != "step":
                    self._tb.add_scalar(name, value, global_step=step)

    def flush(self):
        if self._file is not None:
            self._file.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self):
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
