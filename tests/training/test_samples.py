"""Training samples: validation errors name the sample; JSONL round trip."""

import json
import re

import pytest

from msa_jax.data import Document
from msa_jax.inference.interleave import PromptTemplate
from msa_jax.training.samples import (Sample, SampleError, load_samples, retrieval_target,
                                      save_samples)

DOCS = (Document("a", text="The red car of Alice B. Costa is amber."), Document("b", tokens=[5, 6]))


def test_round_trip(tmp_path):
    samples = [Sample("s0", DOCS, "What is the red car of Alice B. Costa?", ("a",)),
               Sample("s1", DOCS, "q?", ("a", "b"), target="[a][b]<|object_ref_end|>",
                      answer="amber", history=(("[a]<|object_ref_end|>", "[a]. x\n"),))]
    path = tmp_path / "samples.jsonl"
    assert save_samples(samples, path) == 2
    assert load_samples(path) == samples


def test_retrieval_target():
    tpl = PromptTemplate()
    assert retrieval_target(("4", "9")) == "[4][9]" + tpl.round_end
    assert retrieval_target(("4",), last=True) == "[4]" + tpl.end_of_retrieve


@pytest.mark.parametrize("kwargs, message", [
    (dict(documents=()), "sample 'bad' has no documents"),
    (dict(relevant_ids=("zz",)), "sample 'bad': relevant id(s) ['zz'] are not among its documents"),
    (dict(documents=DOCS + (Document("a", text="again"),)), "sample 'bad': repeated document ids"),
    (dict(question="  "), "sample 'bad': the question is empty"),
    (dict(relevant_ids=()), "sample 'bad' has neither relevant ids"),
    (dict(history=(("only one",),)), "sample 'bad': history must be"),
])
def test_bad_samples_name_the_sample(kwargs, message):
    args = {**dict(id="bad", documents=DOCS, question="q?", relevant_ids=("a",)), **kwargs}
    with pytest.raises(SampleError, match="^" + re.escape(message)):
        Sample(**args)


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_jsonl_errors_name_file_line_and_sample(tmp_path):
    good = {"id": "g", "documents": [{"id": "d0", "text": "t"}], "question": "q?",
            "relevant_ids": ["d0"]}
    missing = dict(good, id="q7", relevant_ids=["d9"])
    path = _write(tmp_path / "s.jsonl", [good, missing])
    with pytest.raises(SampleError, match=r"s\.jsonl, line 2: sample 'q7': relevant id\(s\) "
                                          r"\['d9'\] are not among its documents"):
        load_samples(path)
    path = _write(tmp_path / "e.jsonl", [dict(good, id="q8", documents=[])])
    with pytest.raises(SampleError, match=r"e\.jsonl, line 1: sample 'q8' has no documents"):
        load_samples(path)
    path = _write(tmp_path / "d.jsonl", [good, good])
    with pytest.raises(SampleError, match=r"d\.jsonl, line 2: sample id 'g' repeats .*line 1"):
        load_samples(path)
    path = _write(tmp_path / "f.jsonl", [dict(good, id="q9", extra=1)])
    with pytest.raises(SampleError, match=r"sample 'q9': unknown field\(s\) \['extra'\]"):
        load_samples(path)
    path = _write(tmp_path / "t.jsonl", [dict(good, id="q5", documents=[{"id": "d0"}])])
    with pytest.raises(SampleError, match=r"sample 'q5', document 0: record 'd0' has neither"):
        load_samples(path)
    with pytest.raises(SampleError, match="no such file"):
        load_samples(tmp_path / "absent.jsonl")
