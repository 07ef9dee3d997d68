"""The versioned evaluation set: fixed by its seed, held-out persons only, and nothing of it
(question, person, fact) in the samples the trainer generates from configs/train_tiny.py."""

import importlib.util
import json
import os

import pytest

from msa_jax.cli.commands.train import training_samples
from msa_jax.errors import InputError
from msa_jax.eval.evalset import (DEFAULT_DIGEST, VERSION, EvalSuite, _persons,
                                  build_eval_suite, check_disjoint, leaks)
from msa_jax.training.samples import Sample
from msa_jax.training.tasks import EntitySplit
from tests.conftest import REPO

SUITE = build_eval_suite()


def _train_tiny_samples():
    spec = importlib.util.spec_from_file_location(
        "train_tiny", os.path.join(REPO, "configs", "train_tiny.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return training_samples(module.get_config().data)


def test_suite_is_fixed_and_versioned(tmp_path):
    assert SUITE.version == VERSION and SUITE.digest == DEFAULT_DIGEST  # bump VERSION on change
    assert build_eval_suite(seed=2).digest != DEFAULT_DIGEST
    assert [i.hops for i in SUITE.items] == [1] * 40 + [2] * 20
    ids = [d.id for d in SUITE.documents]
    assert ids == [str(i) for i in range(80)]
    chains = [r for i in SUITE.items for r in i.relevant_ids]
    assert sorted(chains, key=int) == ids  # every document is a needle, each of one question
    for item in SUITE.items:  # the answer is stated in the chain's last document
        last = SUITE.documents[int(item.relevant_ids[-1])].text
        assert f" is {item.answer}." in last
    assert _persons([i.question for i in SUITE.items]) <= set(EntitySplit().people("eval"))
    path = tmp_path / "eval_set.json"
    SUITE.save(path)
    assert EvalSuite.load(path) == SUITE
    record = json.loads(path.read_text())
    record["items"][0]["answer"] = "amber" if SUITE.items[0].answer != "amber" else "jade"
    path.write_text(json.dumps(record))
    with pytest.raises(InputError, match="eval_set.json: the evaluation set's digest .* edited"):
        EvalSuite.load(path)


def test_nothing_of_the_eval_set_is_in_the_trainers_samples():
    samples = _train_tiny_samples()
    assert len(samples) >= 512
    assert leaks(SUITE, samples) == []
    check_disjoint(SUITE, samples)


def test_leaks_are_found():
    docs = _train_tiny_samples()[0].documents
    item = SUITE.items[0]  # "What is the secret horse of Jun B. Yilmaz?" -> its fact, its person
    key = item.question[len("What is the "):-1]
    fact, person = f"The {key} is {item.answer}.", key.split(" of ")[-1]
    cases = {"question": Sample("q", docs, item.question, (), answer="x"),
             "person": Sample("p", docs, f"Who is {person}?", (), answer="x"),
             "fact": Sample("f", docs, "A question?", (), answer=fact)}
    for kind, sample in cases.items():
        found = leaks(SUITE, [sample])
        assert any(f.startswith(kind) for f in found), (kind, found)
    with pytest.raises(InputError, match="leaks into the training samples: question 1hop-0"):
        check_disjoint(SUITE, [cases["question"]])
