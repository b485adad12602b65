"""The course tokenizer, ``mmcourse.data.tokenizer``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import torch

from mmcourse.data.tokenizer import SPECIAL_TOKENS, Tokenizer, default_tokenizer


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return default_tokenizer()


def _vocab_lines() -> list[str]:
    return resources.files("mmcourse.data").joinpath("vocab.txt").read_text(encoding="utf-8").splitlines()


# --------------------------------------------------------------------------------------- vocabulary


def test_vocabulary_file_starts_with_special_tokens_and_has_no_duplicates():
    words = [w for w in _vocab_lines() if w]
    assert words[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    duplicates = sorted({w for w in words if words.count(w) > 1})
    assert duplicates == []
    assert all(w == w.strip() and w for w in words), "no stray whitespace in vocab.txt"


def test_vocabulary_words_survive_the_splitter(tok):
    # every ordinary vocabulary entry must be reachable: split(word) gives back the word itself
    for w in tok.itos[len(SPECIAL_TOKENS):]:
        assert tok.split(w) == [w], w


def test_special_ids(tok):
    assert tok.itos[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert tok.itos[tok.sep_id] == "<sep>" and tok.itos[tok.mask_id] == "<mask>" and tok.itos[tok.image_id] == "<image>"
    assert len(tok) == tok.vocab_size == len(tok.itos) == len(tok.stoi)


def test_default_tokenizer_is_shared():
    assert default_tokenizer() is default_tokenizer()


def test_custom_vocabulary_is_validated():
    Tokenizer([*SPECIAL_TOKENS, "red", "square"])
    with pytest.raises(ValueError, match="special tokens"):
        Tokenizer(["red", *SPECIAL_TOKENS])
    with pytest.raises(ValueError, match="duplicate"):
        Tokenizer([*SPECIAL_TOKENS, "red", "red"])


# --------------------------------------------------------------------------------------- encode / decode


@pytest.mark.parametrize(
    "text",
    ["a red square", "a photo of an orange star on a dark background", "two shapes: a cyan moon and a big pink heart"],
)
def test_round_trip(tok, text):
    ids = tok.encode(text)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.unk_id not in ids
    assert tok.decode(ids) == " ".join(tok.split(text))
    assert tok.decode(torch.tensor(ids)) == tok.decode(ids)
    assert tok.encode(text, add_special=False) == ids[1:-1]


def test_text_is_lowercased_and_punctuation_split(tok):
    assert tok.split("A Red SQUARE, then 3!") == ["a", "red", "square", ",", "then", "3", "!"]
    assert tok.encode("A RED square") == tok.encode("a red square")


def test_decode_stops_at_eos_and_skips_special(tok):
    ids = tok.encode("a red square") + [tok.pad_id, tok.pad_id]
    assert tok.decode(ids) == "a red square"
    raw = tok.decode(ids, skip_special=False)
    assert raw.split() == ["<bos>", "a", "red", "square", "<eos>", "<pad>", "<pad>"]


@pytest.mark.parametrize("bad", [-1, 10_000])
def test_decode_out_of_range_id_is_a_value_error(tok, bad):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([tok.bos_id, bad, tok.eos_id])
    with pytest.raises(ValueError):
        tok.decode(torch.tensor([len(tok)]))


def test_unknown_words_become_unk(tok):
    text = "a vermilion square and a zorblax"
    ids = tok.encode(text)
    assert ids.count(tok.unk_id) == 2
    assert tok.unknown_words(text) == ["vermilion", "zorblax"]
    assert tok.decode(ids, skip_special=False).split()[1:-1] == ["a", "<unk>", "square", "and", "a", "<unk>"]
    assert tok.unknown_words("a red square") == []


# --------------------------------------------------------------------------------------- batches


def test_call_pads_with_zeros_after_eos(tok):
    texts = ["a red square", "a big pink heart on a white background"]
    out = tok(texts, context_length=16)
    assert out.dtype == torch.long and out.shape == (2, 16)
    for row, text in zip(out, texts):
        ids = tok.encode(text)
        assert row[: len(ids)].tolist() == ids
        assert (row[len(ids):] == tok.pad_id).all()
        assert tok.pad_id == 0
        assert tok.decode(row) == " ".join(tok.split(text))


def test_call_accepts_one_string_and_tuples(tok):
    one = tok("a red square")
    assert one.shape == (1, 32)
    assert torch.equal(tok(("a red square",)), one)
    assert tok([], context_length=8).shape == (0, 8)


@pytest.mark.parametrize("context_length", [2, 3, 5])
def test_truncation_keeps_eos_last(tok, context_length):
    text = "a photo of a small red square on a dark background"
    out = tok(text, context_length=context_length)
    assert out.shape == (1, context_length)
    ids = out[0].tolist()
    assert ids[0] == tok.bos_id
    assert ids[-1] == tok.eos_id
    assert tok.pad_id not in ids
    assert ids[1:-1] == tok.encode(text)[1 : context_length - 1]


def test_exact_fit_is_not_truncated(tok):
    text = "a red square"
    n = len(tok.encode(text))
    assert tok(text, context_length=n)[0].tolist() == tok.encode(text)


@pytest.mark.parametrize("context_length", [1, 0, -3])
def test_context_length_below_two_is_a_value_error(tok, context_length):
    with pytest.raises(ValueError, match="context_length"):
        tok("a red square", context_length=context_length)


@pytest.mark.parametrize("bad, named", [(5, "int"), (None, "NoneType"), (b"a red square", "bytes")])
def test_non_string_input_is_a_type_error(tok, bad, named):
    with pytest.raises(TypeError, match=named):
        tok(bad)


def test_non_string_item_in_a_list_is_named(tok):
    with pytest.raises(TypeError) as info:
        tok(["a red square", 3, "a blue circle"])
    msg = str(info.value)
    assert "text 1" in msg and "int" in msg and "3" in msg


@pytest.mark.parametrize("method", ["encode", "split", "unknown_words"])
def test_methods_reject_non_strings(tok, method):
    with pytest.raises(TypeError, match="int"):
        getattr(tok, method)(7)


def test_the_course_vocabulary_is_frozen():
    """The bundled checkpoints (clip_shapes and everything built on it) store one embedding row per word of
    vocab.txt: adding a word changes the text tower's size and no checkpoint loads. A notebook that needs
    more words appends them in a tokenizer of its own, ``Tokenizer([*course vocabulary, *new words])``, as
    mmcourse/data/chat.py (notebook 06) does; the course's ids stay as they are."""
    import hashlib

    from mmcourse.data import tokenizer as tokenizer_module

    path = Path(tokenizer_module.__file__).with_name("vocab.txt")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == "4bb032af2c1b056174af95e0f9f19b553e27f27703bb81f2901cbadb08b57539", (
        "mmcourse/data/vocab.txt changed: bundled checkpoints depend on its exact words and size. Revert it and put "
        "new words in a notebook's own Tokenizer (see mmcourse/data/chat.py)"
    )
