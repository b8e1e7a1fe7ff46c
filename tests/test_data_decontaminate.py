"""Held-out decontamination (data.heldout_max_overlap): a document is held out only if few of its spans occur in
other documents, so a held-out loss measures text the model has not met, not memorized near-duplicates."""
from __future__ import annotations

import json

import numpy as np
import pytest

from splitsweep.data import prepare as prep
from splitsweep.plan import ConfigError, make_plan
from tests.test_data_hf import hf_cfg

N = prep.OVERLAP_NGRAM


def concat(*docs):
    return np.concatenate(docs), np.array([len(d) for d in docs])


def test_shared_span_fractions():
    rng = np.random.default_rng(0)
    a, c = rng.integers(0, 500, 400), rng.integers(0, 500, 400)
    half_copy = np.concatenate([a[:200], rng.integers(0, 500, 200)])  # the first half of a, then new text
    tokens, lengths = concat(a, half_copy, c, a[:300], rng.integers(0, 500, N - 1))
    f = prep.shared_span_fractions(tokens, lengths, N)
    assert f[2] == 0.0  # unique text
    assert f[3] == 1.0  # every span of a part of a is in a
    assert f[1] == pytest.approx((200 - N + 1) / (400 - N + 1))  # spans across the seam are new
    assert f[0] == pytest.approx((300 - N + 1) / (400 - N + 1))  # its first 300 tokens are copied twice
    assert f[4] == 0.0  # shorter than one span
    # spans never join two documents: c's last tokens followed by a's first ones are not "in a"
    seam = concat(np.concatenate([c[-N // 2:], a[:N]]), a, c)
    assert prep.shared_span_fractions(*seam, N)[0] == pytest.approx(1 / (N // 2 + 1))


def test_heldout_documents_only_among_eligible_and_every_other_trains():
    lengths = np.full(10, 100)
    overlap = np.array([0.9, 0.0, 0.9, 0.1, 0.9, 0.2, 0.0, 0.9, 0.9, 0.3])
    order = np.random.default_rng(1).permutation(10)
    held, train = prep._heldout_documents("x", order, lengths, 250, overlap, 0.25)
    assert len(held) == 3 and all(overlap[held] <= 0.25)
    assert list(held) == [i for i in order if overlap[i] <= 0.25][:3]  # the seeded order, filtered
    assert sorted([*held, *train]) == list(range(10)) and list(train) == [i for i in order if i not in held]
    with pytest.raises(ConfigError, match=r"data.heldout_max_overlap=0.05.*fewer than data.heldout_tokens=250"):
        prep._heldout_documents("x", order, lengths, 250, overlap, 0.05)
    held0, _ = prep._heldout_documents("x", order, lengths, 250)  # without an overlap: as before
    assert list(held0) == list(order[:3])


def write_corpus(path, rng):
    """Two domains of random-word documents; in `dup`, most documents are near-copies of one text."""
    words = [f"w{i}" for i in range(300)]
    boiler = " ".join(rng.choice(words, 400))
    rows = []
    for i in range(60):
        rows.append({"text": " ".join(rng.choice(words, 300)), "meta": {"source": "plain"}})
        text = boiler + " " + " ".join(rng.choice(words, 40)) if i % 3 else " ".join(rng.choice(words, 300))
        rows.append({"text": text, "meta": {"source": "dup"}})
    path.mkdir(parents=True)
    (path / "corpus-00.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_prepared_heldout_is_decontaminated_and_recorded(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", np.random.default_rng(0))
    base = ["data.domain_field=meta.source", "data.domains=[plain,dup]", "data.heldout_tokens=2000"]
    clean = make_plan(hf_cfg(tmp_path / "a", corpus, *base, "data.heldout_max_overlap=0.25")).source
    info = clean.manifest["per_domain"]["dup"]
    assert info["overlap"]["eligible_documents"] == 20  # the documents that are not near-copies
    assert info["overlap"]["mean_heldout"] <= 0.25 < info["overlap"]["mean_train"]
    held_text = np.fromfile(clean.prepared / info["dir"] / "heldout.bin", dtype=clean.manifest["dtype"])
    assert info["heldout_documents"] == int(np.sum(held_text == clean.manifest["eos_id"]))
    plain = make_plan(hf_cfg(tmp_path / "b", corpus, *base)).source
    assert "overlap" not in plain.manifest["per_domain"]["dup"]
    assert plain.prepared.name != clean.prepared.name  # another preparation
    # null is the behaviour before the setting existed: the same identity as a config without the key
    assert plain.prepared.name == make_plan(hf_cfg(tmp_path / "c", corpus, *base, "data.heldout_max_overlap=null")
                                            ).source.prepared.name


@pytest.mark.parametrize("bad", ["1.0", "-0.1", "true", "'a lot'"])
def test_bad_max_overlap_is_refused_before_reading(tmp_path, bad):
    with pytest.raises(ConfigError, match=r"data.heldout_max_overlap="):
        make_plan(hf_cfg(tmp_path, tmp_path / "nowhere", f"data.heldout_max_overlap={bad}"))
