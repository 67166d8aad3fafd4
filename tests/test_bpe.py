"""Tests of dlbook.bpe: the seed's walk-through, round trips, Hugging Face equality."""
import random

import pytest

from dlbook.bpe import BPE, pre_tokenize, word_counts


def test_seed_walkthrough_first_merges():
    m = BPE.train("low lower lowest".split(), 2)
    assert [(x.left, x.right, x.count) for x in m.merges] == [("l", "o", 3), ("lo", "w", 3)]
    assert m.encode_word("lowest") == ["low", "e", "s", "t", "</w>"]
    assert m.encode_word("slower") == ["s", "low", "e", "r", "</w>"]


def test_sennrich_corpus():
    m = BPE.train({"low": 5, "lower": 2, "newest": 6, "widest": 3}, 10)
    assert [x.symbol for x in m.merges[:4]] == ["es", "t</w>", "est</w>", "lo"]
    assert m.encode_word("lowest") == ["low", "est</w>"]


def test_vocab_ids_and_attach():
    m = BPE.train(["ab", "ab", "b"], 5, attach_eow=True)
    assert m.alphabet == sorted(m.alphabet)
    assert all(m.vocab[x.symbol] >= len(m.alphabet) for x in m.merges)
    assert m.encode_word("ab") == ["ab</w>"]
    assert m.encode_ids("ab ab") == [m.vocab["ab</w>"]] * 2


@pytest.mark.parametrize("attach", [False, True])
def test_encode_decode_identity_random(attach):
    rng = random.Random(0)
    alphabet = "abcdeé한글xyz'-"
    corpus = [" ".join("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))
                       for _ in range(30)) for _ in range(20)]
    m = BPE.train(word_counts(" ".join(corpus), punctuation=False), 60, attach_eow=attach)
    for _ in range(300):
        s = "".join(rng.choice(alphabet + "  \tqQ") for _ in range(rng.randint(0, 40)))
        assert m.decode(m.encode(s)) == " ".join(s.split())
        if all(t in m.vocab for t in m.encode(s)):
            assert m.decode(m.encode_ids(s)) == " ".join(s.split())


def test_matches_huggingface():
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    rng = random.Random(1)
    words = ["low", "lower", "newest", "widest", "slow", "tower", "west", "newer"]
    text = " ".join(rng.choice(words) + rng.choice(["", "s", "ing"]) for _ in range(500))
    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=60, min_frequency=2, end_of_word_suffix="</w>", show_progress=False))
    vocab = tok.get_vocab()
    hf_merges = [tuple(x.split(" ")) if isinstance(x, str) else tuple(x)
                 for x in __import__("json").loads(tok.to_str())["model"]["merges"]]
    init = sorted(vocab, key=vocab.get)[:len(vocab) - len(hf_merges)]
    m = BPE.train(word_counts(text), len(hf_merges), min_frequency=2, attach_eow=True,
                  initial_vocab=init)
    assert [(x.left, x.right) for x in m.merges] == hf_merges
    assert m.vocab == vocab
    for w in ["lowest", "slower", "towering", "newest"]:
        assert m.encode_word(w) == tok.encode(w).tokens


def test_pre_tokenize():
    assert pre_tokenize("Hello, world!") == ["Hello", ",", "world", "!"]
    assert pre_tokenize("Hello, world!", punctuation=False) == ["Hello,", "world!"]


def test_bad_input():
    with pytest.raises(ValueError):
        BPE.train({"a b": 1}, 3)
    with pytest.raises(ValueError):
        BPE.train({"ab": 0}, 3)
    with pytest.raises(ValueError):
        BPE.train(["ab"], -1)
    with pytest.raises(TypeError):
        BPE.train("ab", 1)
    with pytest.raises(ValueError):
        BPE.train(["ab"], 1, initial_vocab=["a"])
    with pytest.raises(TypeError):
        pre_tokenize(3)
    m = BPE.train(["ab"], 1)
    with pytest.raises(KeyError):
        m.encode_ids("zz")


def test_truncated():
    m = BPE.train({"low": 5, "lower": 2, "newest": 6, "widest": 3}, 10)
    t = m.truncated(2)
    assert len(t.merges) == 2 and len(t) == len(m.alphabet) + 2
    assert t.encode_word("lowest") == ["l", "o", "w", "es", "t</w>"]
    with pytest.raises(ValueError):
        m.truncated(11)
