"""Tokenizers for real text: a byte-level BPE trained with Hugging Face `tokenizers` on a sample of the
mixture, or a tokenizer file given by path. Trained tokenizers are cached by a hash of what made them."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ..identity import signature
from ..store import build_once

EOS = "<|endoftext|>"


def load_tokenizer(path: str | os.PathLike):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def eos_id(tok) -> int:
    """Id of the end-of-document token: <|endoftext|> if present, else the file's first special token."""
    for candidate in (EOS, "</s>", "<eos>", "[SEP]", "<|end_of_text|>"):
        i = tok.token_to_id(candidate)
        if i is not None:
            return int(i)
    added = tok.get_added_tokens_decoder() if hasattr(tok, "get_added_tokens_decoder") else {}
    if added:
        return int(min(added))
    raise ValueError("the tokenizer has no end-of-text token (<|endoftext|>, </s>, <eos>); add one")


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def cached_bpe(cache_dir: Path, recipe: dict, sample_texts, vocab_size: int, min_frequency: int) -> Path:
    """tokenizer.json trained from `sample_texts()` (called only on a cache miss), under cache_dir/<hash>/.

    `recipe` is everything that determines the sample (data identity, sample size) and is hashed with the
    trainer settings; two jobs starting at once train it once (lock), and the file appears by rename.
    """
    import tokenizers

    key = signature({"recipe": recipe, "vocab_size": vocab_size, "min_frequency": min_frequency,
                     "kind": "bytelevel-bpe", "tokenizers": tokenizers.__version__})
    out = Path(cache_dir) / key / "tokenizer.json"
    return build_once(out, lambda tmp: train_bpe(sample_texts(), vocab_size, min_frequency).save(str(tmp)),
                      lock=out.parent / ".lock")
