"""Byte-pair encoding (BPE) from scratch, after Sennrich et al. (2016).

Training starts from a corpus split into words, each word written as a sequence of
characters followed by an end-of-word marker, and repeats one step:

    (a*, b*) = argmax_{(a, b)} sum_w f(w) * #{i : w_i = a, w_{i+1} = b}

(the most frequent adjacent pair, counts weighted by the word frequencies f(w)), then
replaces every occurrence of ``a* b*`` by the new symbol ``a*b*``. Ties between equal
counts are broken by the ids of the two symbols (smallest left id first, then smallest
right id), ids being given to the initial alphabet in code-point order and to merged
symbols in the order they are created; this is the rule of Hugging Face ``tokenizers``.

Two conventions for the end-of-word marker ``eow`` (default ``"</w>"``) are supported:

* ``attach_eow=False``: the marker is a symbol of its own, ``l o w </w>`` (the seed's
  walk-through and the example in Sennrich et al.'s paper);
* ``attach_eow=True``: the marker is glued to the last character, ``l o w</w>`` (the
  subword-nmt program and ``tokenizers``' ``end_of_word_suffix``).

Encoding a new word applies the learned merges in the order they were learned.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["BPE", "pre_tokenize", "word_counts", "Merge"]

_WHITESPACE = re.compile(r"\w+|[^\w\s]+")


def pre_tokenize(text: str, *, punctuation: bool = True) -> list[str]:
    """Split ``text`` into words.

    With ``punctuation=True`` the rule is ``\\w+|[^\\w\\s]+`` (runs of word characters and
    runs of punctuation, as ``tokenizers.pre_tokenizers.Whitespace``); otherwise the text
    is split on white space only (``WhitespaceSplit``).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return _WHITESPACE.findall(text) if punctuation else text.split()


def word_counts(text: str, *, punctuation: bool = True) -> dict[str, int]:
    """Frequencies f(w) of the words of ``text`` (see :func:`pre_tokenize`)."""
    return dict(Counter(pre_tokenize(text, punctuation=punctuation)))


@dataclass(frozen=True)
class Merge:
    """One training step: the pair merged, its weighted count and the new symbol."""
    left: str
    right: str
    count: int

    @property
    def symbol(self) -> str:
        return self.left + self.right


@dataclass
class BPE:
    """A BPE model: the initial alphabet, the ordered merges and the vocabulary.

    ``vocab`` maps each symbol to its id: the alphabet in code-point order first, then one
    symbol per merge in training order.
    """
    eow: str = "</w>"
    attach_eow: bool = False
    alphabet: list[str] = field(default_factory=list)
    merges: list[Merge] = field(default_factory=list)
    vocab: dict[str, int] = field(default_factory=dict)

    # ------------------------------------------------------------------ training
    def _split(self, word: str) -> tuple[str, ...]:
        if not word:
            raise ValueError("cannot split an empty word")
        chars = list(word)
        if self.attach_eow:
            chars[-1] = chars[-1] + self.eow
        else:
            chars.append(self.eow)
        return tuple(chars)

    @classmethod
    def train(cls, words: dict[str, int] | list[str], num_merges: int, *,
              min_frequency: int = 1, eow: str = "</w>", attach_eow: bool = False,
              initial_vocab: list[str] | None = None, verbose: bool = False) -> "BPE":
        """Learn at most ``num_merges`` merges from ``words``.

        ``words`` is a mapping word -> frequency f(w) (or a list of words, counted).
        Training stops early when no pair occurs ``min_frequency`` times or more.
        ``initial_vocab`` fixes the initial symbols and their ids (hence the tie-breaking);
        by default they are the symbols of the split words in code-point order.
        With ``verbose=True`` every merge is printed with its pair count.
        """
        if isinstance(words, (list, tuple)):
            words = dict(Counter(words))
        if not isinstance(words, dict):
            raise TypeError("words must be a dict word -> count or a list of words")
        if not isinstance(num_merges, int) or num_merges < 0:
            raise ValueError(f"num_merges must be a non-negative int, got {num_merges!r}")
        if min_frequency < 1:
            raise ValueError("min_frequency must be >= 1")
        for w, c in words.items():
            if not isinstance(w, str) or not w or any(ch.isspace() for ch in w):
                raise ValueError(f"words must be non-empty strings without spaces: {w!r}")
            if not isinstance(c, int) or c < 1:
                raise ValueError(f"word counts must be positive ints: {w!r}: {c!r}")
        model = cls(eow=eow, attach_eow=attach_eow)
        seqs = [list(model._split(w)) for w in words]
        freqs = list(words.values())
        symbols = {s for seq in seqs for s in seq}
        if initial_vocab is None:
            model.alphabet = sorted(symbols)
        else:
            model.alphabet = list(initial_vocab)
            if len(set(model.alphabet)) != len(model.alphabet):
                raise ValueError("initial_vocab has repeated symbols")
            missing = symbols.difference(model.alphabet)
            if missing:
                raise ValueError(f"initial_vocab lacks symbols of the corpus: {sorted(missing)[:5]}")
        model.vocab = {s: i for i, s in enumerate(model.alphabet)}

        pairs: Counter = Counter()
        where: dict[tuple[str, str], set[int]] = {}
        for k, (seq, f) in enumerate(zip(seqs, freqs)):
            for p in zip(seq, seq[1:]):
                pairs[p] += f
                where.setdefault(p, set()).add(k)

        vocab = model.vocab
        for step in range(num_merges):
            if not pairs:
                break
            best = max(pairs.items(), key=lambda kv: (kv[1], -vocab[kv[0][0]], -vocab[kv[0][1]]))
            (a, b), count = best
            if count < min_frequency:
                break
            new = a + b
            model.merges.append(Merge(a, b, count))
            if new not in vocab:
                vocab[new] = len(vocab)
            if verbose:
                print(f"merge {step + 1:3d}: {a!r:>10} + {b!r:<10} (count {count}) -> {new!r}")
            for k in list(where.get((a, b), ())):
                seq, f = seqs[k], freqs[k]
                for p in zip(seq, seq[1:]):
                    pairs[p] -= f
                    if pairs[p] == 0:
                        del pairs[p]
                    where.get(p, set()).discard(k)
                seqs[k] = seq = _apply(seq, a, b)
                for p in zip(seq, seq[1:]):
                    pairs[p] += f
                    where.setdefault(p, set()).add(k)
            where.pop((a, b), None)
            pairs.pop((a, b), None)
        return model

    # ------------------------------------------------------------------ coding
    def encode_word(self, word: str) -> list[str]:
        """The symbols of one word: its characters (+ marker) merged in training order."""
        if not isinstance(word, str):
            raise TypeError("word must be a str")
        seq = list(self._split(word))
        ranks = self._ranks()
        while len(seq) > 1:
            cands = [(ranks[p], i) for i, p in enumerate(zip(seq, seq[1:])) if p in ranks]
            if not cands:
                break
            r = min(cands)[0]
            m = self.merges[r]
            seq = _apply(seq, m.left, m.right)
        return seq

    def _ranks(self) -> dict[tuple[str, str], int]:
        cache = getattr(self, "_rank_cache", None)
        if cache is None or cache[0] != len(self.merges):
            ranks: dict[tuple[str, str], int] = {}
            for i, m in enumerate(self.merges):
                ranks.setdefault((m.left, m.right), i)
            self._rank_cache = cache = (len(self.merges), ranks)
        return cache[1]

    def encode(self, text: str, *, punctuation: bool = False) -> list[str]:
        """Tokens of ``text``: pre-tokenize (white space, or also punctuation), then BPE."""
        return [s for w in pre_tokenize(text, punctuation=punctuation) for s in self.encode_word(w)]

    def encode_ids(self, text: str, *, punctuation: bool = False) -> list[int]:
        """Token ids of ``text``; a symbol outside the vocabulary raises ``KeyError``."""
        toks = self.encode(text, punctuation=punctuation)
        missing = [t for t in toks if t not in self.vocab]
        if missing:
            raise KeyError(f"symbols outside the vocabulary: {missing[:5]}")
        return [self.vocab[t] for t in toks]

    def decode(self, tokens: list[str] | list[int]) -> str:
        """Inverse of :meth:`encode` (white-space split): join the symbols, turn each
        end-of-word marker into a space. ``decode(encode(s)) == " ".join(s.split())``."""
        if tokens and isinstance(tokens[0], int):
            inv = {i: s for s, i in self.vocab.items()}
            tokens = [inv[t] for t in tokens]
        if any(not isinstance(t, str) for t in tokens):
            raise TypeError("tokens must all be str or all be int")
        return "".join(tokens).replace(self.eow, " ").rstrip(" ")

    def truncated(self, num_merges: int) -> "BPE":
        """The model after its first ``num_merges`` merges (alphabet + those merges)."""
        if not 0 <= num_merges <= len(self.merges):
            raise ValueError(f"num_merges must lie in [0, {len(self.merges)}]")
        merges = self.merges[:num_merges]
        keep = set(self.alphabet) | {m.symbol for m in merges}
        vocab = {s: i for s, i in self.vocab.items() if s in keep}
        return BPE(self.eow, self.attach_eow, list(self.alphabet), list(merges), vocab)

    def __len__(self) -> int:
        return len(self.vocab)


def _apply(seq: list[str], a: str, b: str) -> list[str]:
    """Replace every non-overlapping occurrence of ``a b`` (left to right) by ``ab``."""
    out: list[str] = []
    i = 0
    n = len(seq)
    while i < n:
        if i < n - 1 and seq[i] == a and seq[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(seq[i])
            i += 1
    return out
