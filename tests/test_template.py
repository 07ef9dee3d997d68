"""One source for the prompt strings: msa_jax/data/template.py. Every other module imports them;
no other code in msa_jax spells a chat or Memory Interleave token."""

import ast
import dataclasses
import pathlib
import re

from msa_jax.data import template
from msa_jax.data.template import CHAT_HEAD, SPECIAL_TOKENS, PromptTemplate, chat_prefix

PACKAGE = pathlib.Path(template.__file__).resolve().parents[1]  # .../msa_jax
TOKEN = re.compile(r"<\|[a-z_]+\|>|<End-of-Retrieve>")


def _code_strings(path: pathlib.Path):
    """(line, text) of every string constant in the module's code, docstrings excluded."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docs.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.lineno, node.value


def test_no_other_module_spells_a_template_token():
    spelled = [f"{p.relative_to(PACKAGE.parent)}:{line}: {s!r}"
               for p in sorted(PACKAGE.rglob("*.py")) if p != pathlib.Path(template.__file__)
               for line, s in _code_strings(p) if TOKEN.search(s)]
    assert not spelled, "template strings outside msa_jax/data/template.py:\n" + "\n".join(spelled)


def test_everyone_imports_the_one_source():
    from msa_jax.cli import common
    from msa_jax.data import DEFAULT_SPECIALS
    from msa_jax.inference import interleave
    import msa_jax
    assert interleave.PromptTemplate is PromptTemplate is msa_jax.PromptTemplate
    assert DEFAULT_SPECIALS is SPECIAL_TOKENS
    assert common.chat_prefix is chat_prefix
    assert PromptTemplate().prefix == CHAT_HEAD


def test_template_tokens_are_special_tokens():
    """Every chat / interleave token a template field uses is one the tokenizers treat as
    special (else a byte tokenizer would spell it out as text)."""
    used = {t for f in dataclasses.fields(PromptTemplate)
            for t in TOKEN.findall(getattr(PromptTemplate(), f.name))}
    assert used and used <= set(SPECIAL_TOKENS), used - set(SPECIAL_TOKENS)
    assert TOKEN.findall(CHAT_HEAD) == [template.IM_START]


def test_chat_prefix_in_the_byte_tokenizer():
    from msa_jax.data.tokenizer import ByteTokenizer
    tok = ByteTokenizer()
    ids = chat_prefix(tok)
    assert ids[0] == tok.token_id("<|im_start|>") and tok.decode(list(ids)) == "<|im_start|>user\n"
    assert len(ids) == 1 + len("user\n")
