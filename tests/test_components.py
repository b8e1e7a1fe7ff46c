"""Model ladder, schedules and mixture sampling: the pieces a trajectory is made of."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from splitsweep.data.phonebook import Phonebook
from splitsweep.data.source import MixtureSchedule
from splitsweep.model import ModelSpec, build_model
from splitsweep.schedule import Schedule

LADDER = sorted((Path(__file__).resolve().parents[1] / "conf" / "model").glob("*.yaml"))


def size_from_name(name: str) -> float:
    number, unit = re.fullmatch(r"llama_(\d+)([kmb])", name).groups()
    return int(number) * {"k": 1e3, "m": 1e6, "b": 1e9}[unit]


@pytest.mark.parametrize("path", LADDER, ids=[p.stem for p in LADDER])
def test_ladder_names_say_the_non_embedding_size(path):
    spec = ModelSpec.from_config(OmegaConf.load(path))
    assert spec.name == path.stem
    assert spec.non_embedding_params() == pytest.approx(size_from_name(spec.name), rel=0.05)


def test_ladder_spans_cpu_to_cluster_sizes():
    sizes = [size_from_name(p.stem) for p in LADDER]
    assert min(sizes) < 1e5 and max(sizes) >= 9e8


def test_counted_parameters_match_the_torchtitan_model():
    spec = ModelSpec.from_config(OmegaConf.load(LADDER[0].parent / "llama_402k.yaml"))
    model = build_model(spec, vocab_size=100, seq_len=64, seed=0)
    blocks = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("tok_embeddings", "output")))
    assert blocks == spec.non_embedding_params()
    assert sum(p.numel() for p in model.parameters()) == spec.total_params(100)
    again = build_model(spec, vocab_size=100, seq_len=64, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))


def test_wsd_seed_does_not_depend_on_its_length_and_decays_in_the_expert_phase():
    s = Schedule("wsd", peak_lr=1.0, warmup_steps=10, min_lr_factor=0.1)
    short = [s.lr(t, 40, 60) for t in range(40)]
    long = [s.lr(t, 80, 20) for t in range(40)]
    assert short == long  # seeds of every D lie on one trajectory
    assert s.lr(0, 40, 60) == pytest.approx(0.1) and s.lr(39, 40, 60) == 1.0
    assert s.lr(99, 40, 60) == pytest.approx(0.1)
    assert s.lr(69, 40, 60) == pytest.approx(1 - 0.9 * 30 / 60)
    assert s.lr(99, 100, 0) == 1.0  # no expert phase: no decay


def test_cosine_seed_depends_on_its_length_and_expert_rewarms():
    s = Schedule("cosine", peak_lr=1.0, warmup_steps=10, min_lr_factor=0.1)
    assert s.seed_depends_on_length
    assert s.lr(39, 40, 60) == pytest.approx(0.1)
    assert s.lr(40, 40, 60) == pytest.approx(0.1) and s.lr(49, 40, 60) == pytest.approx(1.0)
    assert s.lr(99, 40, 60) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="'linear'"):
        Schedule("linear", 1.0, 1, 0.1)


def test_mixture_holds_its_weights_and_never_reads_a_sequence_twice():
    mix = MixtureSchedule(["a", "b", "c"], [0.5, 0.3, 0.2], seed=0, block=240)
    looked = [mix.lookup(i) for i in range(240 * 3)]
    counts = np.bincount([k for k, _ in looked], minlength=3)
    assert counts.tolist() == [360, 216, 144]
    assert len(set(looked)) == len(looked)
    for k in range(3):  # each domain's stream is read in order, with no gaps
        assert sorted(j for kk, j in looked if kk == k) == list(range(counts[k]))
    assert mix.consumed(240 * 3 + 17).sum() == 240 * 3 + 17


def test_phonebook_streams_and_recall_items():
    book = Phonebook(n_domains=3, entries_per_domain=7, heldout_sequences=2, seq_len=32, seed=0)
    seq = book.domain_sequence(1, 5)
    assert seq.shape == (33,)
    assert np.array_equal(book.domain_sequence(1, 5)[-1], book.domain_sequence(1, 6)[0])  # packed stream
    text = book.tokenizer.decode(book.sequences("d2", 0, 4)[:, :-1].reshape(-1))  # rows overlap by one token
    facts = {f"{n}:{num}" for n, num in book.entries[2]}
    assert all(line in facts for line in text.split("\n")[1:-1])
    tokens, mask = book.recall_items(0)
    assert tokens.shape == (7, 16) and mask.sum(1).tolist() == [6] * 7
    again = Phonebook(n_domains=3, entries_per_domain=7, heldout_sequences=2, seq_len=32, seed=5)
    assert again.entries == book.entries  # the training seed changes the order, not the facts


def test_one_bootstrap_default_everywhere():
    from omegaconf import OmegaConf

    from analysis.cli import _parser as build_parser
    from analysis.intervals import N_BOOTSTRAP
    from tests.helpers import REPO

    assert OmegaConf.load(REPO / "conf" / "config.yaml").report.n_bootstrap == N_BOOTSTRAP
    parser = build_parser()
    for verb in ("fit", "split", "report"):
        args = parser.parse_args([verb, "results.jsonl", "--out", "x"])
        assert args.n_bootstrap == N_BOOTSTRAP, verb
