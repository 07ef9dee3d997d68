"""Two processes on localhost (jax.distributed, gloo), each encoding and holding half of the bank,
answer together exactly as one process holding all of it; when one of them is killed mid-run the
other exits with a clear error within a bounded time.

The workers are tests/parallel/two_process_worker.py. Every wait here is bounded: a worker that
runs too long is killed and the test fails instead of hanging.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from msa_jax.memory.distributed import EXIT_PEER_LOST
from tests.parallel import common

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
START_LIMIT_S = 240  # both workers compiled, answered and wrote their results
DEAD_PEER_LIMIT_S = 60  # the survivor has exited after its peer was killed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(paths, procs, limit_s):
    end = time.time() + limit_s
    while not all(os.path.exists(p) for p in paths):
        dead = [p.returncode for p in procs if p.poll() is not None]
        if dead or time.time() > end:
            return False
        time.sleep(0.2)
    return True


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Runs both workers to the end: results, then process 1 killed while process 0 answers."""
    out = tmp_path_factory.mktemp("two_process")
    port = free_port()
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)
    procs, logs = [], []
    for i in range(2):
        log = open(out / f"worker_{i}.log", "w+")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tests.parallel.two_process_worker", str(i), str(port),
             str(out)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
        logs.append(log)
    try:
        results = [out / f"result_{i}.json" for i in range(2)]
        if not wait_for(results, procs, START_LIMIT_S):
            pytest.fail("the two workers did not both answer:\n" + read_logs(logs))
        (out / "go").touch()  # process 0 answers again and blocks in a collective...
        time.sleep(2.0)
        procs[1].send_signal(signal.SIGKILL)  # ...while its peer dies
        killed_at = time.time()
        try:
            procs[0].wait(timeout=DEAD_PEER_LIMIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"process 0 still runs {DEAD_PEER_LIMIT_S} s after its peer died:\n"
                        + read_logs(logs))
        yield {"results": [json.loads(p.read_text()) for p in results],
               "survivor_rc": procs[0].returncode, "survivor_s": time.time() - killed_at,
               "survivor_log": read_logs(logs[:1])}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        for log in logs:
            log.close()


def read_logs(logs) -> str:
    text = []
    for log in logs:
        log.flush()
        log.seek(0)
        text.append("".join(line for line in log if "warn" not in line.lower())[-4000:])
    return "\n---\n".join(text)


def test_two_processes_answer_like_one(two_processes, reference, bank):
    for i, record in enumerate(two_processes["results"]):
        assert record["num_shards"] == 4  # 2 processes x 2 devices on the memory axis
        assert record["doc_ids"] == bank.doc_ids
        got = common.Result.from_json(record["result"])
        common.assert_same_result(reference, got, where=f"process {i}")
    local = [r["local_chunks"] for r in two_processes["results"]]
    assert sum(local) == bank.num_chunks and min(local) > 0  # each holds only its half


def test_dead_peer_is_a_clear_error_not_a_hang(two_processes):
    assert two_processes["survivor_rc"] == EXIT_PEER_LOST, two_processes["survivor_log"]
    assert "peer process of the jax.distributed run" in two_processes["survivor_log"]
    assert two_processes["survivor_s"] < DEAD_PEER_LIMIT_S
