"""Query files: JSON list and JSONL load to `Query`s; errors name the file, record and query id."""

import json

import pytest

from msa_jax.data import (CorpusError, Document, Query, check_references, load_queries,
                          save_queries)

RECORDS = [
    {"query": "Who wrote it?", "reference_list": [3, "7"], "answer": "Ana"},
    {"question": "Where?", "answer": ["Oslo", "oslo"], "id": "q-2"},
    {"query": "Nothing known"},
    {"query": "ints", "reference_ids": [1, 1, 2], "answers": 42, "id": 9},
]
EXPECTED = [
    Query("0", "Who wrote it?", ("3", "7"), ("Ana",)),
    Query("q-2", "Where?", (), ("Oslo", "oslo")),
    Query("2", "Nothing known"),
    Query("9", "ints", ("1", "2"), ("42",)),  # repeated references kept once
]


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", ["json", "jsonl"])
def test_formats(tmp_path, kind):
    if kind == "json":
        path = _write(tmp_path / "q.json", json.dumps(RECORDS, indent=2))
    else:
        path = _write(tmp_path / "q.jsonl", "\n".join(map(json.dumps, RECORDS)) + "\n\n")
    assert load_queries(path) == EXPECTED


def test_save_round_trip(tmp_path):
    queries = EXPECTED + [Query("u", "naïve 東京 🚀?", ("a",), ("ü",))]
    path = tmp_path / "out.jsonl"
    assert save_queries(queries, path) == len(queries)
    assert load_queries(path) == queries
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert set(first) == {"id", "query", "reference_list", "answer"}  # the reference's names


def test_query_validation():
    assert Query("a", "q", ["x"], ["y"]).reference_ids == ("x",)
    for args, message in [(("", "q"), "non-empty string"), (("a", "  "), "question is empty"),
                          (("a", "q", "doc"), "reference_ids must be"),
                          (("a", "q", (), ("",)), "answers must be")]:
        with pytest.raises(CorpusError, match=message):
            Query(*args)


ERROR_CASES = {
    "no question": ('{"id": "a", "answer": "x"}\n',
                    ["q.jsonl, line 1", "'a'", "no query or question"]),
    "empty question": ('{"query": "ok"}\n{"query": " "}\n', ["q.jsonl, line 2", "'1'", "empty"]),
    "references not a list": ('{"id": "r", "query": "q", "reference_list": "3"}\n',
                              ["line 1", "'reference_list' must be a list"]),
    "bad reference": ('{"query": "q", "reference_list": [1.5]}\n',
                      ["line 1", "an entry of 'reference_list'", "float"]),
    "bad answer": ('{"query": "q", "answer": [["x"]]}\n', ["line 1", "an entry of 'answer'"]),
    "duplicate ids": ('{"id": 1, "query": "a"}\n{"id": "1", "query": "b"}\n',
                      ["q.jsonl, line 2", "duplicate query id '1'", "first at", "q.jsonl, line 1"]),
    "not an object": ('["a question"]\n', ["q.jsonl, line 1", "expected a query object"]),
    "malformed": ('{"query": "a"}\n{"query": }\n', ["q.jsonl, line 2", "malformed JSON"]),
    "empty": ("\n\n", ["q.jsonl contains no queries"]),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_errors_name_the_place(tmp_path, case):
    content, expected = ERROR_CASES[case]
    with pytest.raises(CorpusError) as info:
        load_queries(_write(tmp_path / "q.jsonl", content))
    for part in expected:
        assert part in str(info.value), (part, str(info.value))


def test_file_kind_errors(tmp_path):
    with pytest.raises(CorpusError, match=r"q\.json: expected a list at the top level, got dict"):
        load_queries(_write(tmp_path / "q.json", '{"0": {"query": "a"}}'))
    with pytest.raises(CorpusError, match=r"q\.json, item 1: expected a query object"):
        load_queries(_write(tmp_path / "q.json", '[{"query": "a"}, "b"]'))
    with pytest.raises(CorpusError, match=r"q\.pkl: unsupported file type '\.pkl'"):
        load_queries(_write(tmp_path / "q.pkl", "x"))
    with pytest.raises(CorpusError, match="no such file"):
        load_queries(tmp_path / "missing.jsonl")
    with pytest.raises(CorpusError, match="is a folder"):
        load_queries(tmp_path)


def test_check_references():
    docs = [Document("3", text="a"), Document("7", text="b")]
    check_references(EXPECTED[:3], docs)
    check_references(EXPECTED[:1], ["3", "7"])
    with pytest.raises(CorpusError,
                       match=r"query '9' references documents not in the corpus: '1', '2'"):
        check_references(EXPECTED, docs)
