"""The demo model's recipes (configs/train_demo*.py) load, and the samples they generate fit
their own length buckets, routing rows and the bundled model's vocabulary: the check the trainer
runs before compiling, on a few of each recipe's questions (a bucket too small for an answer
step failed a run minutes in, after generating every sample)."""

import pytest

import msa_jax
from msa_jax.cli.commands.train import optim_config, training_samples
from msa_jax.training import pipeline
from msa_jax.utils import load_python_file
from tests.conftest import REPO

RECIPES = ("train_demo_router.py", "train_demo.py", "train_demo_read.py",
           "train_demo_answer.py", "train_demo_reader.py", "train_demo_teacher.py") + tuple(
    f"train_demo_curriculum.py:{stage}" for stage in ("read1", "mix", "answer", "mix2")) + tuple(
    f"train_demo_frozen_routing.py:{stage}" for stage in ("answer1", "answer", "mix")) + tuple(
    f"train_demo_both.py:{stage}" for stage in ("easy", "full"))


@pytest.fixture(scope="module")
def bundled():
    return msa_jax.from_pretrained(f"{REPO}/models/msa-tiny-demo")


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_samples_fit_its_buckets(bundled, name):
    file, *stage = name.split(":")  # FILE:ARG, as --config takes it
    config = load_python_file(f"{REPO}/configs/{file}").get_config(*stage)
    d = config.data
    d.num_queries = 24
    ocfg = optim_config(config)
    pcfg = pipeline.PipelineConfig(batch_size=d.batch_size, length_buckets=d.length_buckets,
                                   doc_buckets=d.doc_buckets, routing_rows=ocfg.batch_negatives,
                                   max_segment=ocfg.max_segment, max_active=ocfg.max_active)
    samples = training_samples(d)
    kinds = {s.id.rsplit(".", 1)[1] == "answer" for s in samples}
    want = ({False} if "retrieve" in d.kinds else set()) | (
        {True} if "answer" in d.kinds and d.with_answer else set())
    assert kinds == want, name
    batches = pipeline.StepBatches(samples, bundled.tokenizer, bundled.cfg, pcfg)
    assert len(batches.sizes) == len(samples)
    assert batches.sizes[:, 1].max() == d.docs_per_sample
    assert ocfg.read == config.optim.get("read", "routed")


@pytest.mark.parametrize("file", ["train_demo_curriculum.py", "train_demo_frozen_routing.py",
                                  "train_demo_both.py"])
def test_staged_recipes_refuse_an_unknown_stage(file):
    with pytest.raises(ValueError, match="stage 'warmup' is not one of"):
        load_python_file(f"{REPO}/configs/{file}").get_config("warmup")


def test_kinds_keeps_the_named_steps():
    d = load_python_file(f"{REPO}/configs/train_demo.py").get_config().data
    d.num_queries = 4
    every = training_samples(d)
    d.kinds = ("answer",)
    answers = training_samples(d)
    assert [s.id for s in answers] == [s.id for s in every if s.answer is not None]
    assert len(answers) == 8 and len(every) == 4 * 2 + 4 * 3  # per chain: hops + 1 steps
