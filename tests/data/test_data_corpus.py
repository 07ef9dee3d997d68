"""Corpus files: every format loads to the expected documents; every error names its place."""

import collections
import json
import os
import pickle

import numpy as np
import pytest

from msa_jax.data import CorpusError, Document, iter_corpus, load_corpus, save_corpus

UNICODE = "naïve café — 東京 🚀\nsecond line\t<|im_end|>"


def _write(path, content, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
        f.write(content)
    return str(path)


def _jsonl(path, records):
    return _write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


# ----------------------------------------------------------------------------- formats


def test_jsonl_fields_aliases_titles_and_default_ids(tmp_path):
    path = _write(tmp_path / "c.jsonl", "\n".join([
        json.dumps({"text": "plain"}),
        "",  # blank lines are skipped and not counted
        json.dumps({"contents": "from contents", "doc_id": 70}),
        json.dumps({"content": UNICODE, "_id": "u"}, ensure_ascii=False),
        json.dumps({"tokens": [5, 6, 7], "id": "t"}),
        json.dumps({"input_ids": [9]}),
        json.dumps({"text": "body", "title": "Head", "id": "titled"}),
        json.dumps({"text": "no title", "title": ""}),
        json.dumps("a bare string"),
        json.dumps([1, 2]),
        "   ",
    ]) + "\n")
    assert load_corpus(path) == [
        Document("0", text="plain"),
        Document("70", text="from contents"),
        Document("u", text=UNICODE),
        Document("t", tokens=(5, 6, 7)),
        Document("4", tokens=(9,)),
        Document("titled", text="Head\nbody"),
        Document("6", text="no title"),
        Document("7", text="a bare string"),
        Document("8", tokens=(1, 2)),
    ]


def test_jsonl_default_ids_count_records_not_lines(tmp_path):
    path = _write(tmp_path / "c.jsonl", '\n{"text": "a"}\n\n{"text": "b"}\n"c"\n[3, 4]\n')
    assert load_corpus(path) == [Document("0", text="a"), Document("1", text="b"),
                                 Document("2", text="c"), Document("3", tokens=(3, 4))]


@pytest.mark.parametrize("name", ["docs.jsonl", "docs.json", "docs.pkl", "docs.pickle"])
def test_list_of_strings_and_records_round_trip(tmp_path, name):
    strings = ["first doc", UNICODE, "third"]
    records = [{"id": "a", "text": "x"}, {"doc_id": 3, "tokens": [1, 2]}, {"content": "y"}]
    expected_records = [Document("a", text="x"), Document("3", tokens=(1, 2)),
                        Document("2", text="y")]
    for items, expected in [(strings, [Document(str(i), text=s) for i, s in enumerate(strings)]),
                            (records, expected_records)]:
        path = str(tmp_path / name)
        if name.endswith(".jsonl"):
            _jsonl(path, items)
        elif name.endswith(".json"):
            _write(path, json.dumps(items))
        else:
            _write(path, pickle.dumps(items), "wb")
        assert load_corpus(path) == expected


@pytest.mark.parametrize("name", ["docs.json", "docs.pkl"])
def test_dict_of_id_to_text(tmp_path, name):
    mapping = {"alpha": "first", "beta": UNICODE, "7": "seven"}
    path = str(tmp_path / name)
    if name.endswith(".json"):
        _write(path, json.dumps(mapping))
    else:
        _write(path, pickle.dumps({**mapping, 8: [4, 5]}), "wb")
    docs = load_corpus(path)
    assert docs[:3] == [Document(k, text=v) for k, v in mapping.items()]
    if name.endswith(".pkl"):
        assert docs[3] == Document("8", tokens=(4, 5))


def test_folder_of_text_files(tmp_path):
    root = tmp_path / "corpus"
    _write(root / "b.txt", "bee")
    _write(root / "a" / "z.md", "# zed\n")
    _write(root / "a" / "y.TXT", UNICODE)
    _write(root / "notes.json", "[]")  # other extensions are ignored
    _write(root / ".hidden" / "x.txt", "skipped")
    _write(root / ".dot.txt", "skipped")
    assert load_corpus(root) == [Document("a/y", text=UNICODE), Document("a/z", text="# zed\n"),
                                 Document("b", text="bee")]


def test_save_corpus_round_trip_and_streaming(tmp_path):
    docs = [Document("x", text=UNICODE), Document("y", tokens=(0, 1, 2**31)),
            Document("z", text="line\u2028separator and \r return")]
    path = tmp_path / "out.jsonl"
    assert save_corpus(iter(docs), path) == 3
    assert load_corpus(path) == docs
    stream = iter_corpus(path)
    assert next(stream) == docs[0]  # a generator: documents come one at a time


def test_iter_corpus_yields_documents_before_a_later_error(tmp_path):
    path = _write(tmp_path / "c.jsonl", '{"text": "ok"}\n{"text": "ok too"}\n{"text": \n')
    stream = iter_corpus(path)
    assert [next(stream).text, next(stream).text] == ["ok", "ok too"]
    with pytest.raises(CorpusError, match="line 3: malformed JSON"):
        next(stream)


# ----------------------------------------------------------------------------- Document


def test_document_validation():
    assert Document("a", tokens=np.array([3, 4], dtype=np.int32)).tokens == (3, 4)
    assert type(Document("a", tokens=np.array([3])).tokens[0]) is int
    assert Document("a", tokens=[1]).is_tokenized and not Document("a", text="t").is_tokenized
    for kwargs, message in [
        (dict(id="a"), "exactly one of text and tokens"),
        (dict(id="a", text="t", tokens=[1]), "exactly one of text and tokens"),
        (dict(id="", text="t"), "non-empty string"),
        (dict(id=3, text="t"), "non-empty string"),
        (dict(id="a", text=" \n"), "document 'a' is empty"),
        (dict(id="a", tokens=[]), "document 'a' is empty"),
        (dict(id="a", tokens=[1, -2]), "non-negative"),
        (dict(id="a", tokens=[1, True]), "not booleans"),
        (dict(id="a", tokens=[1.5]), "list of ints"),
        (dict(id="a", tokens="12"), "list of ints"),
        (dict(id="a", text=b"bytes"), "must be a string"),
    ]:
        with pytest.raises(CorpusError, match=message):
            Document(**kwargs)


# ----------------------------------------------------------------------------- errors

ERROR_CASES = {
    # name: (file name, content, substrings the message must contain)
    "empty document": ("c.jsonl", '{"id": "d0", "text": "a"}\n{"id": "d1", "text": "  "}\n',
                       ["c.jsonl, line 2", "'d1'", "is empty"]),
    "empty tokens": ("c.jsonl", '{"tokens": []}\n', ["c.jsonl, line 1", "'0'", "is empty"]),
    "title without body": ("c.jsonl", '{"id": "t", "title": "T", "text": ""}\n',
                           ["line 1", "'t'", "is empty"]),
    "duplicate ids": ("c.jsonl",
                      '{"id": "x", "text": "a"}\n{"text": "b"}\n{"id": "x", "text": "c"}\n',
                      ["c.jsonl, line 3", "duplicate document id 'x'", "first at",
                       "c.jsonl, line 1"]),
    "neither text nor tokens": ("c.jsonl", '{"id": "n", "body": "a"}\n',
                                ["c.jsonl, line 1", "'n'", "neither text nor tokens"]),
    "both text and tokens": ("c.jsonl", '{"text": "a", "tokens": [1]}\n',
                             ["line 1", "'0'", "both 'text' and 'tokens'"]),
    "text not a string": ("c.jsonl", '{"id": "s", "text": 5}\n',
                          ["line 1", "'s'", "'text' must be"]),
    "tokens not a list": ("c.jsonl", '{"tokens": "1 2"}\n',
                          ["line 1", "'tokens' must be a list"]),
    "bad token": ("c.jsonl", '{"id": "b", "tokens": [1, "x"]}\n',
                  ["line 1", "'b'", "list of ints"]),
    "bad id type": ("c.jsonl", '{"id": 1.5, "text": "a"}\n',
                    ["line 1", "'id' must be a string or"]),
    "bad record type": ("c.jsonl", '{"text": "a"}\n3\n', ["c.jsonl, line 2", "got int"]),
    "malformed jsonl": ("c.jsonl", '{"text": "a"}\n{"text": "b",}\n',
                        ["c.jsonl, line 2", "malformed JSON", "column"]),
    "malformed json": ("c.json", '[\n "a",\n "b"\n "c"]', ["c.json, line 4", "malformed JSON"]),
    "jsonl named json": ("c.json", '{"text": "a"}\n{"text": "b"}\n', ["c.json, line 2", ".jsonl"]),
    "json scalar": ("c.json", '"just a string"', ["c.json", "expected a list or a dict", "str"]),
    "empty jsonl": ("c.jsonl", "\n\n  \n", ["c.jsonl contains no documents"]),
    "empty json list": ("c.json", "[]", ["c.json contains no documents"]),
    "unsupported": ("c.csv", "a,b\n", ["c.csv", "unsupported file type '.csv'", ".jsonl"]),
    "json list item": ("c.json", '["a", ""]', ["c.json, item 1", "'1'", "is empty"]),
    "json dict entry": ("c.json", '{"k": "a", "j": 3}', ["c.json, key 'j'", "got int"]),
    "empty json key": ("c.json", '{"": "a"}', ["c.json, key ''", "key is empty"]),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_errors_name_the_place(tmp_path, case):
    name, content, expected = ERROR_CASES[case]
    path = _write(tmp_path / name, content)
    with pytest.raises(CorpusError) as info:
        load_corpus(path)
    message = str(info.value)
    assert str(tmp_path) in message
    for part in expected:
        assert part in message, (part, message)


def test_jsonl_not_utf8(tmp_path):
    path = _write(tmp_path / "c.jsonl", b'{"text": "a"}\n{"text": "\xff\xfe"}\n', "wb")
    with pytest.raises(CorpusError, match=r"c\.jsonl, line 2: not valid utf-8"):
        load_corpus(path)


def test_missing_path(tmp_path):
    with pytest.raises(CorpusError, match=r"nope\.jsonl: no such file or directory"):
        load_corpus(tmp_path / "nope.jsonl")


def test_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    _write(empty / "readme.rst", "not a corpus file")
    with pytest.raises(CorpusError, match=r"empty contains no documents \(looked for \*\.txt"):
        load_corpus(empty)

    bad = tmp_path / "bad"
    _write(bad / "ok.txt", "fine")
    _write(bad / "sub" / "latin1.txt", "caf\xe9".encode("latin-1"), "wb")
    with pytest.raises(CorpusError, match=r"sub/latin1\.txt: not valid utf-8"):
        load_corpus(bad)

    blank = tmp_path / "blank"
    _write(blank / "e.md", "\n\n")
    with pytest.raises(CorpusError, match=r"e\.md: document 'e' is empty"):
        load_corpus(blank)

    dup = tmp_path / "dup"
    _write(dup / "a.md", "one")
    _write(dup / "a.txt", "two")
    with pytest.raises(CorpusError) as info:
        load_corpus(dup)
    assert "a.txt: duplicate document id 'a' (first at" in str(info.value)
    assert "a.md" in str(info.value)


# ----------------------------------------------------------------------------- restricted pickles


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # would create the marker file if the unpickler allowed `open`
        return (open, (self.marker, "w"))


class _Custom:
    pass


@pytest.mark.parametrize("payload", ["evil", "custom", "numpy", "ordered_dict"])
def test_restricted_unpickler_refuses_other_classes(tmp_path, payload):
    marker = tmp_path / "pwned"
    value = {"evil": lambda: [_Evil(str(marker))], "custom": lambda: [_Custom()],
             "numpy": lambda: [np.arange(3)],
             "ordered_dict": lambda: collections.OrderedDict(a="text")}[payload]()
    path = _write(tmp_path / "m.pkl", pickle.dumps(value), "wb")
    with pytest.raises(CorpusError, match=r"m\.pkl: unsafe or corrupt pickle: refusing to load"):
        load_corpus(path)
    assert not marker.exists()


def test_corrupt_pickle(tmp_path):
    path = _write(tmp_path / "m.pickle", pickle.dumps(["a", "b"])[:-3], "wb")
    with pytest.raises(CorpusError, match=r"m\.pickle: .*pickle"):
        load_corpus(path)
