"""lm-evaluation-harness adapter for splitsweep's torchtitan models and tokenizers.

`SplitsweepLM` implements lm-eval's `LM` interface: `loglikelihood` (log-probability of a continuation
given a context, and whether greedy decoding would produce it), `loglikelihood_rolling` (log-likelihood of
a whole text in disjoint windows of the model's context), and `generate_until` (greedy decoding until a
stop string, the end-of-text token or `max_gen_toks`).

Distributed: lm-eval sees one process (rank 0 of 1) on every rank, so every rank runs the same
evaluation and gets the same requests. The adapter splits the forward passes across ranks (sorted by
length, contiguous equal shares padded with dummy rows, as in `Trainer._sharded_map`), so every rank makes
the same number of forward calls (FSDP all-gathers parameters in each), then gathers the scores; all ranks
return identical results. One process works the same way with a world of one, on CPU or GPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from lm_eval.api.model import LM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window


class TokenizerMismatch(ValueError):
    """The text cannot be represented by the model's tokenizer."""


@dataclass
class TextTokenizer:
    """The model's tokenizer seen as text <-> ids, plus the token that stands for an empty context."""

    encode_fn: Callable[[str], list[int]]
    decode_fn: Callable[[list[int]], str]
    prefix_id: int          # conditions an empty context (lm-eval's prefix_token_id)
    eos_id: int | None      # stops generation (None: no end-of-text token)
    identity: str
    vocab_size: int
    exact: bool = True      # decode(encode(text)) == text for every encodable text

    def encode(self, text: str) -> list[int]:
        return self.encode_fn(text)

    def decode(self, ids) -> str:
        return self.decode_fn([int(i) for i in ids])

    def check(self, text: str, what: str = "text") -> None:
        """Raise TokenizerMismatch if `text` does not survive encode/decode."""
        try:
            ids = self.encode(text)
        except TokenizerMismatch as err:
            raise TokenizerMismatch(f"{what}: {err}") from None
        if any(not 0 <= i < self.vocab_size for i in ids):
            raise TokenizerMismatch(f"{what}: token ids outside the model's vocabulary of {self.vocab_size}")
        back = self.decode(ids)
        if back != text:
            raise TokenizerMismatch(f"{what}: {text[:60]!r} does not survive the {self.identity[:40]} "
                                    f"tokenizer (decodes to {back[:60]!r})")


def char_tokenizer(tok) -> TextTokenizer:
    """The phonebook's CharTokenizer; "\\n" (the separator before every entry) conditions empty contexts."""

    def encode(text: str) -> list[int]:
        bad = sorted({c for c in text if c not in tok.index})
        if bad:
            raise TokenizerMismatch(f"characters {bad} are not in the character tokenizer's alphabet "
                                    f"{tok.alphabet!r}")
        return [tok.index[c] for c in text]

    return TextTokenizer(encode, lambda ids: tok.decode(ids), tok.index["\n"], None,
                         "char:" + tok.alphabet, tok.vocab_size)


def hf_tokenizer(path) -> TextTokenizer:
    """A Hugging Face `tokenizers` file (the prepared data's tokenizer.json); its end-of-text token
    conditions empty contexts and stops generation."""
    from .data.tokenizer import eos_id, load_tokenizer

    tok = load_tokenizer(path)
    eos = eos_id(tok)
    return TextTokenizer(lambda text: tok.encode(text, add_special_tokens=False).ids,
                         lambda ids: tok.decode(ids, skip_special_tokens=False), eos, eos,
                         f"tokenizers:{path}", tok.get_vocab_size())


def tokenizer_for(source) -> TextTokenizer:
    """The tokenizer a token source was made with."""
    if hasattr(source, "tokenizer") and hasattr(source.tokenizer, "alphabet"):
        return char_tokenizer(source.tokenizer)
    prepared = getattr(source, "prepared", None)
    if prepared is not None and (prepared / "tokenizer.json").exists():
        return hf_tokenizer(prepared / "tokenizer.json")
    raise TokenizerMismatch(f"no text tokenizer known for data source {type(source).__name__}")


class SplitsweepLM(LM):
    def __init__(self, model: torch.nn.Module, tokenizer: TextTokenizer, max_length: int, env=None,
                 batch_size: int = 32, max_gen_toks: int = 32):
        super().__init__()
        self.model, self.tok, self.max_length = model, tokenizer, int(max_length)
        self.env = env
        self.batch_size, self.max_gen_toks = int(batch_size), int(max_gen_toks)
        self._device = env.device if env is not None else next(model.parameters()).device
        # lm-eval must not split requests itself: see the module docstring.
        self._rank, self._world_size = 0, 1

    # ------------------------------------------------------------------ ranks
    @property
    def _w(self) -> int:
        return self.env.world_size if self.env is not None else 1

    @property
    def _r(self) -> int:
        return self.env.rank if self.env is not None else 0

    def _gather(self, local: list) -> list:
        if self._w == 1:
            return local
        import torch.distributed as dist

        out = [None] * self._w
        dist.all_gather_object(out, local)
        return [x for part in out for x in part]

    def _any(self, flag: bool) -> bool:
        if self._w == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self._device)
        self.env.all_reduce_sum(t)
        return bool(t.item() > 0)

    def _share(self, n: int) -> tuple[list[int], int]:
        """This rank's contiguous share of n items and the share size every rank pads to."""
        per = math.ceil(n / self._w) if n else 0
        return list(range(self._r * per, min(n, (self._r + 1) * per))), per

    # ------------------------------------------------------------------ model
    @torch.no_grad()
    def _logits(self, rows: list[list[int]]) -> tuple[torch.Tensor, list[int]]:
        """Log-softmax over right-padded rows (a causal model: padding never affects earlier positions)."""
        lengths = [len(r) for r in rows]
        batch = torch.zeros(len(rows), max(lengths), dtype=torch.long)
        for i, r in enumerate(rows):
            batch[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        logits = self.model(batch.to(self._device))
        return F.log_softmax(logits.float(), dim=-1), lengths

    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(sum of log p(continuation | context), greedy) for (context ids, continuation ids) pairs."""
        was_training = self.model.training
        self.model.eval()
        order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0]) - len(pairs[i][1]))
        mine, per = self._share(len(pairs))
        local: list[tuple[int, float, bool]] = []
        for start in range(0, per, self.batch_size):
            slots = list(range(start, min(per, start + self.batch_size)))
            items = [order[mine[s]] if s < len(mine) else None for s in slots]
            rows, conts = [], []
            for item in items:
                ctx, cont = pairs[item if item is not None else order[0]]
                whole = (ctx + cont)[-(self.max_length + 1):]
                rows.append(whole[:-1])
                conts.append(cont[-len(whole) + 1:] if len(cont) >= len(whole) else cont)
            logp, lengths = self._logits(rows)
            for b, item in enumerate(items):
                if item is None:
                    continue
                cont, end = conts[b], lengths[b]
                lp = logp[b, end - len(cont):end]
                target = torch.tensor(cont, device=lp.device)
                local.append((item, float(lp.gather(-1, target[:, None]).sum()),
                              bool((lp.argmax(-1) == target).all())))
        if was_training:
            self.model.train()
        out: list[tuple[float, bool] | None] = [None] * len(pairs)
        for item, value, greedy in self._gather(local):
            out[item] = (value, greedy)
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ lm-eval API
    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if context == "":
            return [self.tok.prefix_id], self.tok.encode(continuation)
        # Trailing spaces belong to the continuation (lm-eval's HF models do the same).
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation, context = context[-n_spaces:] + continuation, context[:-n_spaces]
        whole = self.tok.encode(context + continuation)
        ctx = self.tok.encode(context)
        return whole[:len(ctx)], whole[len(ctx):]

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [self._encode_pair(*req.args) for req in requests]
        results = self._score(pairs)
        for req, res in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", req.args, res)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owner = [], []
        for i, req in enumerate(requests):
            tokens = self.tok.encode(req.args[0])
            for w in get_rolling_token_windows(tokens, self.tok.prefix_id, self.max_length, 1):
                windows.append(make_disjoint_window(w))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (value, _) in zip(owner, self._score(windows)):
            totals[i] += value
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        was_training = self.model.training
        self.model.eval()
        specs = []
        for req in requests:
            context, kwargs = req.args
            kwargs = dict(kwargs or {})
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            ctx = self.tok.encode(context) if context else [self.tok.prefix_id]
            specs.append((ctx, until, int(kwargs.get("max_gen_toks", self.max_gen_toks))))
        order = sorted(range(len(specs)), key=lambda i: -len(specs[i][0]))
        mine, per = self._share(len(specs))
        local: list[tuple[int, str]] = []
        for start in range(0, per, self.batch_size):
            slots = list(range(start, min(per, start + self.batch_size)))
            items = [order[mine[s]] if s < len(mine) else None for s in slots]
            seqs = [list(specs[i if i is not None else order[0]][0]) for i in items]
            made = [[] for _ in items]
            done = [i is None for i in items]
            # Every rank steps until all ranks' rows are done (FSDP: equal forward calls).
            while self._any(not all(done)):
                logp, lengths = self._logits([s[-self.max_length:] for s in seqs])
                for b, item in enumerate(items):
                    if done[b]:
                        continue
                    nxt = int(logp[b, lengths[b] - 1].argmax())
                    _, until, limit = specs[item]
                    if self.tok.eos_id is not None and nxt == self.tok.eos_id:
                        done[b] = True
                        continue
                    seqs[b].append(nxt)
                    made[b].append(nxt)
                    text = self.tok.decode(made[b])
                    if len(made[b]) >= limit or any(u and u in text for u in until):
                        done[b] = True
            for b, item in enumerate(items):
                if item is None:
                    continue
                text = self.tok.decode(made[b])
                for u in specs[item][1]:
                    if u:
                        text = text.split(u)[0]
                local.append((item, text))
        if was_training:
            self.model.train()
        out: list[str] = [""] * len(specs)
        for item, text in self._gather(local):
            out[item] = text
        for req, text in zip(requests, out):
            self.cache_hook.add_partial("generate_until", req.args, text)
        return out
