"""The identities data preparation names its outputs by stay the recorded ones: a prepared data set's key, its
clustering's and its trained tokenizer's. A fixed copy of the shipped corpus (fixed path and modification
times, which a local file's identity includes) is labelled by a column and by clusters; only the labels, the
clustering and the tokenizer are computed (no corpus is tokenized). The keys were recorded before the data
section was typed (data/prepare.HFDataArgs): typing it changed no identity."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from splitsweep.data import prepare as prep
from tests.helpers import REPO

FIXED = Path("/tmp/splitsweep-golden-corpus")  # part of the identity: never a per-test directory
MTIME_NS = 1_700_000_000_000_000_000


@pytest.fixture
def fixed_corpus(tmp_path):
    shutil.rmtree(FIXED, ignore_errors=True)
    FIXED.mkdir()
    for f in sorted((REPO / "tests" / "data" / "corpus").glob("corpus-*.jsonl")):
        shutil.copyfile(f, FIXED / f.name)
        os.utime(FIXED / f.name, ns=(MTIME_NS, MTIME_NS))
    yield tmp_path
    shutil.rmtree(FIXED, ignore_errors=True)


def data_cfg(root: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=[
            f"paths.root={root}", "data=hf", f"data.data_files={FIXED}/corpus-*.jsonl",
            "data.tokenizer.vocab_size=300", "data.heldout_tokens=600", "data.progress=false",
            "data.tokenizer.sample_documents=50", *overrides]).data


@pytest.mark.parametrize("labels, recorded", [
    (("data.domain_field=meta.source", "data.domains=[licenses,manpages,python]"),
     ({"domain_field": "meta.source"}, "57a96bc9a8705c36", "30730b62bffc4786")),
    (("data.clustering.n_clusters=2", "data.clustering.sample_documents=40", "data.clustering.svd_components=4",
      "data.clustering.max_features=200"),
     ({"clusters": "37a9e1c8a9285fe7"}, "fcc54b574933afec", "4db1dba426052669")),
])
def test_prepared_clustering_and_tokenizer_keys_are_the_recorded_ones(fixed_corpus, labels, recorded):
    cfg = data_cfg(fixed_corpus, *labels)
    labeler = prep.Labeler(cfg)
    _, tokenizer, _ = prep.resolve_tokenizer(cfg, labeler)
    assert (labeler.identity(), tokenizer["trained"], prep.prepared_key(cfg, labeler, tokenizer)) == recorded
