"""One process of the two-process memory-parallel run (driven by test_distributed.py).

    python -m tests.parallel.two_process_worker PROCESS_ID PORT OUT_DIR

Joins a 2-process jax.distributed run on localhost (2 CPU devices per process), encodes its half of
the corpus, answers the questions together with its peer and writes OUT_DIR/result_{id}.json.
Then process 1 waits to be killed, and process 0 waits for OUT_DIR/go and answers again: its peer
is dead by then, so it must exit with a clear error (status EXIT_PEER_LOST), not hang.
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
        with open(os.path.join(out, f"result_{process_id}.json"), "w") as f:
            json.dump({"result": result.to_json(), "num_shards": placement.num_shards,
                       "local_chunks": int(local.num_chunks), "doc_ids": bank.doc_ids}, f)
        if process_id == 1:
            time.sleep(120)  # killed by the test
            sys.exit("worker 1: was not killed")
        _wait_for(os.path.join(out, "go"), 60)
        with distributed.guard("answer after the peer died", DEAD_PEER_TIMEOUT_S):
            common.run(model, bank, rows, placement)
        sys.exit("worker 0: answered without its peer")
    except distributed.PeerLostError as e:
        distributed.exit_peer_lost(e)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
