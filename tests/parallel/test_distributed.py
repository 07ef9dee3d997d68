"""Two processes on localhost (jax.distributed, gloo), each encoding and holding half of the bank,
answer together exactly as one process holding all of it; when one of them is SIGKILLed while the
other waits in a collective, the survivor detects the loss and names the lost peer (exit
EXIT_PEER_LOST), which a timeout (EXIT_STEP_TIMEOUT) cannot pass for. The same step, run once
before with nobody dying, completes.

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

from msa_jax.memory.distributed import EXIT_PEER_LOST, EXIT_STEP_TIMEOUT
from tests.parallel import common

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
START_LIMIT_S = 240  # both workers compiled, answered and wrote their results
DEAD_PEER_LIMIT_S = 60  # the survivor has exited after its peer was killed
ROUND_LIMIT_S = 60  # a round of the worker's answer_again has started / finished


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
    """Runs both workers to the end: results; round 1 of answer_again with both alive; round 2,
    process 1 killed while process 0 waits in the step's collective."""
    out = tmp_path_factory.mktemp("two_process")
    port = free_port()
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)
    procs, logs = start_workers("tests.parallel.two_process_worker", out, port, env)
    try:
        results = [out / f"result_{i}.json" for i in range(2)]
        if not wait_for(results, procs, START_LIMIT_S):
            pytest.fail("the two workers did not both answer:\n" + read_logs(logs))
        (out / "go_1").touch()  # round 1: nobody dies, both run the step to its end
        again = [out / f"again_{i}.json" for i in range(2)]
        if not wait_for(again, procs, ROUND_LIMIT_S):
            pytest.fail("round 1 (nobody dies) did not complete:\n" + read_logs(logs))
        (out / "go_2").touch()  # round 2: process 0 runs the same step alone...
        if not wait_for([out / "waiting_0_2"], procs, ROUND_LIMIT_S):
            pytest.fail("process 0 did not start round 2:\n" + read_logs(logs))
        time.sleep(1.0)  # ...and blocks in its first collective, which process 1 never joins
        assert procs[0].poll() is None, "process 0 finished round 2 without its peer"
        procs[1].send_signal(signal.SIGKILL)
        killed_at = time.time()
        try:
            procs[0].wait(timeout=DEAD_PEER_LIMIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"process 0 still runs {DEAD_PEER_LIMIT_S} s after its peer died:\n"
                        + read_logs(logs))
        yield {"results": [json.loads(p.read_text()) for p in results],
               "again": [json.loads(p.read_text()) for p in again],
               "survivor_rc": procs[0].returncode, "survivor_s": time.time() - killed_at,
               "survivor_log": read_logs(logs[:1])}
    finally:
        stop_workers(procs, logs)


def start_workers(module: str, out, port: int, env, count: int = 2):
    """`python -m module <i> <port> <out>` for i < count, each logging to out/worker_<i>.log.
    Returns (processes, open log files)."""
    procs, logs = [], []
    for i in range(count):
        log = open(out / f"worker_{i}.log", "w+")
        procs.append(subprocess.Popen([sys.executable, "-m", module, str(i), str(port), str(out)],
                                      cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
        logs.append(log)
    return procs, logs


def stop_workers(procs, logs):
    """Kill the workers still running; close their logs."""
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


def test_the_step_completes_when_nobody_dies(two_processes, reference):
    """The companion of the dead-peer run: the same step (answer_again), same guard and timeout."""
    for i, record in enumerate(two_processes["again"]):
        common.assert_same_result(reference, common.Result.from_json(record),
                                  where=f"round 1, process {i}")


def test_dead_peer_is_detected_and_named_not_timed_out(two_processes):
    log = two_processes["survivor_log"]
    rc = two_processes["survivor_rc"]
    assert rc != EXIT_STEP_TIMEOUT, f"the survivor timed out instead of detecting:\n{log}"
    assert rc == EXIT_PEER_LOST, log
    # the survivor names the lost peer and the runtime's evidence that its connection is gone
    assert "process 0 lost peer process 1 of the jax.distributed run" in log, log
    assert "answer again (round 2)" in log and "connection closed by peer" in log.lower(), log
    assert two_processes["survivor_s"] < DEAD_PEER_LIMIT_S
