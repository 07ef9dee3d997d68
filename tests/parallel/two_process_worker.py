"""One process of the two-process memory-parallel run (driven by test_distributed.py).

    python -m tests.parallel.two_process_worker PROCESS_ID PORT OUT_DIR

Joins a 2-process jax.distributed run on localhost (2 CPU devices per process), encodes its half of
the corpus, answers the questions together with its peer and writes OUT_DIR/result_{id}.json.
Then two rounds of the same step, `answer_again`, each started by OUT_DIR/go_{round}:
- round 1, nobody dies: both processes answer again and write OUT_DIR/again_{id}.json;
- round 2: process 0 answers again alone and blocks in a collective (it writes
  OUT_DIR/waiting_0 just before), while process 1 sleeps until the test SIGKILLs it. Process 0 must
  detect the loss (PeerLostError, status EXIT_PEER_LOST), not time out (EXIT_STEP_TIMEOUT).
"""

import json
import os
import sys
import time

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ.setdefault("MSA_JAX_NO_PROGRESS", "1")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from msa_jax.memory import distributed  # noqa: E402
from msa_jax.memory.encoder import DocInput  # noqa: E402
from msa_jax.memory.parallel import MemoryPlacement, memory_mesh  # noqa: E402
from tests.parallel import common  # noqa: E402

STEP_TIMEOUT_S = 240  # a step that takes longer means a peer is gone (compiles included)
DEAD_PEER_TIMEOUT_S = 20  # after the peer is killed


def _wait_for(path: str, limit_s: float):
    end = time.time() + limit_s
    while not os.path.exists(path):
        if time.time() > end:
            sys.exit(f"worker: {path} did not appear within {limit_s} s")
        time.sleep(0.1)


def _write_json(path: str, value):
    """Atomically: the test polls for the file and reads it as soon as it exists."""
    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
    os.replace(path + ".tmp", path)


def answer_again(model, bank, rows, placement, out: str, process_id: int, round_: int):
    """The step both rounds run: wait for go_{round}, answer under the same guard and timeout."""
    _wait_for(os.path.join(out, f"go_{round_}"), 60)
    open(os.path.join(out, f"waiting_{process_id}_{round_}"), "w").close()
    with distributed.guard(f"answer again (round {round_})", DEAD_PEER_TIMEOUT_S):
        return common.run(model, bank, rows, placement)


def main(process_id: int, port: int, out: str):
    distributed.initialize(f"127.0.0.1:{port}", 2, process_id, timeout_s=60,
                           heartbeat_timeout_s=10)
    model = common.tiny_model()
    docs = common.corpus()
    half = len(docs) // 2
    mine = docs[:half] if process_id == 0 else docs[half:]
    ids = [str(i + (0 if process_id == 0 else half)) for i in range(len(mine))]
    try:
        with distributed.guard("encode and gather the bank", STEP_TIMEOUT_S):
            local = model.encode_memory([DocInput(i, tuple(d)) for i, d in zip(ids, mine)],
                                        block_tokens=common.BLOCK_TOKENS, progress=False)
            bank = distributed.DistributedBank(local)
        placement = MemoryPlacement(memory_mesh())
        rows = common.question_rows(docs)
        with distributed.guard("answer", STEP_TIMEOUT_S):
            result = common.run(model, bank, rows, placement)
        _write_json(os.path.join(out, f"result_{process_id}.json"),
                    {"result": result.to_json(), "num_shards": placement.num_shards,
                     "local_chunks": int(local.num_chunks), "doc_ids": bank.doc_ids})
        again = answer_again(model, bank, rows, placement, out, process_id, 1)
        _write_json(os.path.join(out, f"again_{process_id}.json"), again.to_json())
        if process_id == 1:
            time.sleep(120)  # killed by the test
            sys.exit("worker 1: was not killed")
        answer_again(model, bank, rows, placement, out, process_id, 2)
        sys.exit("worker 0: answered without its peer")
    except distributed.PeerLostError as e:
        distributed.exit_peer_lost(e)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
