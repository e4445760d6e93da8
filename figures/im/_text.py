"""The LSTM language model of Im, Tao & Branson and its text data (Penn Treebank, or CPython's pydoc topics)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from figures.contract import require_data
from landscape.data import Splits


class WordLSTM(nn.Module):
    """Word-level LSTM language model: embedding, LSTM, dropout, linear decoder over the vocabulary.

    Input ``(N, T)`` word ids (any dtype holding integers), output ``(N, V, T)`` logits, so that
    ``cross_entropy(out, targets)`` with targets ``(N, T)`` is the mean next-word loss and the package's
    classification tools (accuracy = next-word accuracy) apply unchanged. Every sequence starts from a zero state.
    """

    def __init__(self, vocab: int, embed: int, hidden: int, layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        h, _ = self.lstm(self.drop(self.embedding(x.long())))
        return self.decoder(self.drop(h)).transpose(1, 2)


_PTB_FILES = ("ptb.train.txt", "ptb.test.txt")


def ptb_dir(data_dir: Path | str | None) -> Path:
    """The directory holding Penn Treebank's text files: ``data_dir`` itself, ``ptb/`` or ``simple-examples/data/``.

    Raises:
        MissingDataError: Naming the files and where to put them (as the CIFAR-10 figures do).
    """
    what = "Penn Treebank as Mikolov's text files (ptb.train.txt and ptb.test.txt, from simple-examples.tgz)"
    root = require_data(data_dir, what=what)
    for sub in (".", "ptb", "simple-examples/data"):
        if all((root / sub / f).is_file() for f in _PTB_FILES):
            return root / sub
    return require_data(root, *_PTB_FILES, what=what)  # raises, naming the missing files


def tokenize(text: str) -> list[str]:
    import re

    return re.findall(r"[a-z]+|[0-9]+|[^\sa-z0-9]", text.lower())


def text_splits(
    dataset: str,
    data_dir: Path | str | None = None,
    *,
    vocab: int = 1000,
    seq_len: int = 20,
    train_size: int | None = None,
) -> Splits:
    """Next-word prediction data: ``(N, T)`` word ids and ``(N, T)`` targets (the same text shifted by one word).

    ``"pydoc"``: the English documentation that ships with CPython (``pydoc_data.topics``, about 120,000 words), its
    topics in sorted order, lower-cased and split into words, digit runs and punctuation marks; the first 90% of the
    words train, the last 10% test. ``"ptb"``: Penn Treebank's ``ptb.train.txt`` and ``ptb.test.txt`` (already
    tokenized, 10,000 words with ``<unk>``), each line ending in ``<eos>``. The vocabulary is the ``vocab - 1`` most
    frequent training words plus ``<unk>`` for the rest. The text is cut into consecutive non-overlapping sequences of
    ``seq_len`` words.

    Args:
        dataset: ``"pydoc"`` or ``"ptb"``.
        data_dir: Directory of the Penn Treebank files (``"ptb"`` only).
        vocab: Vocabulary size.
        seq_len: Words per sequence.
        train_size: Keep only this many training sequences (``None``: all).

    Raises:
        MissingDataError: For ``"ptb"`` when ``data_dir`` does not hold the files.
    """
    import collections

    if dataset == "pydoc":
        from pydoc_data.topics import topics

        words = tokenize("\n".join(topics[k] for k in sorted(topics)))
        cut = int(0.9 * len(words))
        train_w, test_w, src = (
            words[:cut],
            words[cut:],
            "pydoc_data.topics of CPython " + ".".join(map(str, __import__("sys").version_info[:2])),
        )
    elif dataset == "ptb":
        root = ptb_dir(data_dir)

        def read(name: str) -> list[str]:
            return [
                w for line in (root / name).read_text(encoding="utf-8").splitlines() for w in [*line.split(), "<eos>"]
            ]

        train_w, test_w, src = read("ptb.train.txt"), read("ptb.test.txt"), f"Penn Treebank from {root}"
    else:
        raise ValueError(f"text dataset must be 'pydoc' or 'ptb', got {dataset!r}")
    counts = collections.Counter(train_w)
    counts.pop("<unk>", None)
    ids = {w: i + 1 for i, (w, _) in enumerate(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: vocab - 1])}

    def seqs(ws: list[str]) -> tuple[Tensor, Tensor]:
        t = torch.tensor([ids.get(w, 0) for w in ws], dtype=torch.int64)
        n = (len(t) - 1) // seq_len
        return t[: n * seq_len].view(n, seq_len), t[1 : n * seq_len + 1].view(n, seq_len)

    train, test = seqs(train_w), seqs(test_w)
    if train_size is not None:
        train = (train[0][:train_size], train[1][:train_size])
    unk = float((train[1] == 0).float().mean())
    desc = (
        f"{src}; {len(train_w):,} training / {len(test_w):,} test words, vocabulary {vocab:,} "
        f"(<unk> {unk:.1%} of training targets)"
    )
    return Splits(train=train, val=None, test=test, input_shape=(seq_len,), num_classes=vocab, description=desc)
