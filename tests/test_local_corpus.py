"""`python -m splitsweep.data.local_corpus` on a directory of files the test makes: sorted, capped, deduplicated,
domains dealt round-robin into contiguous shards, the same bytes for the same files."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from splitsweep.data import local_corpus
from splitsweep.data.local_corpus import Files


def paragraphs(tag: str, n: int) -> str:
    return "\n\n".join(f"{tag} paragraph {i}: " + "word " * 40 for i in range(n))


@pytest.fixture
def sources(tmp_path) -> dict[str, tuple[Files, ...]]:
    lic, man, src = tmp_path / "licenses", tmp_path / "man1", tmp_path / "lib"
    for d in (lic, man, src / "pkg", src / "test"):
        d.mkdir(parents=True)
    for name in ("b-licence", "a-licence", "c-licence"):  # written out of order
        (lic / name).write_text(paragraphs(name, 2))
    (lic / "copy-of-a").write_text(paragraphs("a-licence", 2))  # same text as a-licence: dropped
    (lic / "tiny").write_text("too short")  # under min_doc_bytes: dropped
    for name in ("ls", "cp"):
        roff = f'.\\" comment\n.TH {name.upper()} 1\n.SH NAME\n{name} \\- a \\fBtool\\fR\n.PP\n' + paragraphs(name, 3)
        (man / f"{name}.1.gz").write_bytes(gzip.compress(roff.encode()))
    (src / "pkg" / "mod.py").write_text(paragraphs("module", 30))  # long: cut into paragraph-aligned chunks
    (src / "test" / "test_mod.py").write_text(paragraphs("a test", 2))  # skipped part
    return {"licenses": (Files(str(lic), "*"),), "manpages": (Files(str(man), "*.gz"),),
            "python": (Files(str(src), "**/*.py", ("test",)),)}


def rows(paths: list[Path]) -> list[dict]:
    return [json.loads(line) for p in paths for line in p.read_text().splitlines()]


def test_build_is_sorted_capped_round_robin_and_reproducible(tmp_path, sources):
    domains = ("licenses", "manpages", "python")
    paths = local_corpus.build(tmp_path / "a", mb_per_domain=0.001, domains=domains, shards=3,
                               max_doc_bytes=600, sources=sources)
    assert [p.name for p in paths] == ["corpus-00.jsonl", "corpus-01.jsonl", "corpus-02.jsonl"]
    out = rows(paths)
    by_domain = {d: [r for r in out if r["meta"]["source"] == d] for d in domains}
    # sorted paths, duplicates and tiny files dropped, test directories skipped
    names = {d: [Path(r["meta"]["file"]).name for r in by_domain[d]] for d in domains}
    assert names["licenses"] == ["a-licence", "b-licence", "c-licence"]
    assert sorted(names["manpages"]) == names["manpages"] and set(names["manpages"]) == {"cp.1.gz", "ls.1.gz"}
    assert all(Path(r["meta"]["file"]).name == "mod.py" for r in by_domain["python"])
    # roff stripped
    assert all(".TH" not in r["text"] and "\\f" not in r["text"] and "comment" not in r["text"]
               for r in by_domain["manpages"])
    # chunks are paragraph-aligned, at most about max_doc_bytes, and stop at the cap (1,000 bytes here)
    python = by_domain["python"]
    assert 1 < len(python) < 30 and all(len(r["text"]) <= 600 for r in python)
    assert all(r["text"].startswith("module paragraph") for r in python)
    assert sum(len(r["text"].encode()) for r in python[:-1]) < 1000 <= sum(len(r["text"].encode()) for r in python)
    # round-robin: the first rows take one document of each domain in turn
    assert [r["meta"]["source"] for r in out[:6]] == list(domains) * 2
    # contiguous shards, every shard non-empty
    assert all(p.read_text() for p in paths)
    # the same files give the same bytes
    again = local_corpus.build(tmp_path / "b", mb_per_domain=0.001, domains=domains, shards=3,
                               max_doc_bytes=600, sources=sources)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]


def test_unknown_domain_is_named(tmp_path, sources):
    with pytest.raises(ValueError, match="'poetry'"):
        local_corpus.build(tmp_path, domains=("poetry",), sources=sources)
