"""A small multi-domain text corpus built from files already on a Debian machine, for offline tests and
CPU sweeps: `python -m splitsweep.data.local_corpus OUT_DIR [--mb-per-domain 2]`.

Domains (each document is a file, or a paragraph-aligned chunk of one):
  licenses    /usr/share/common-licenses/* and /usr/share/doc/*/copyright
  manpages    /usr/share/man/man1/*.gz, roff macros stripped
  python      the running Python's standard library sources
  changelogs  /usr/share/doc/*/changelog*.gz (Debian and upstream changelogs)
`--sources other` gives another corpus from other files (C headers, Perl modules, READMEs and NEWS files,
the installed Python packages' sources), to check a ladder on data it was not built on.

Output: JSON Lines shards `corpus-XX.jsonl` of {"text": ..., "meta": {"source": <domain>, "file": <path>}},
domains interleaved round-robin, the sequence cut into consecutive shards. The same files give the same bytes (sorted paths, fixed caps); a machine with other packages installed gives another corpus,
so tests read the fixed copy in `tests/data/corpus/` instead.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

DOMAINS = ("licenses", "manpages", "python", "changelogs")


def _read(path: Path) -> str:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile):
        return ""
    return raw.decode("utf-8", errors="replace")


_ROFF_ESCAPE = re.compile(r"\\f[BIRP1-4]|\\f\(..|\\\(..|\\[&|^%e-]|\\s[+-]?\d")


def _strip_roff(text: str) -> str:
    out = []
    for line in text.splitlines():
        if line.startswith((".\\\"", "'\\\"", '.\\"')):
            continue
        if line.startswith("."):
            parts = line.split(None, 1)
            if parts[0] in (".SH", ".SS", ".B", ".I", ".BR", ".IR", ".RB", ".RI", ".BI", ".IB", ".TP", ".IP") \
                    and len(parts) > 1:
                line = parts[1].replace('"', "")
            elif parts[0] in (".PP", ".LP", ".P", ".sp", ".br"):
                line = ""
            else:
                continue
        out.append(_ROFF_ESCAPE.sub("", line).replace("\\-", "-").replace("\\\\", "\\"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


@dataclass(frozen=True)
class Files:
    """The files of one domain: `pattern` globbed under `root` (recursively for `**`), sorted, minus any path with
    a part in `skip_parts`."""
    root: str
    pattern: str
    skip_parts: tuple[str, ...] = ()

    def paths(self) -> list[Path]:
        return sorted(p for p in Path(self.root).glob(self.pattern)
                      if p.is_file() and not set(p.relative_to(self.root).parts) & set(self.skip_parts))


SOURCES: dict[str, tuple[Files, ...]] = {
    "licenses": (Files("/usr/share/common-licenses", "*"), Files("/usr/share/doc", "*/copyright")),
    "manpages": (Files("/usr/share/man/man1", "*.gz"),),
    "python": (Files(sysconfig.get_paths()["stdlib"], "**/*.py", ("site-packages", "test", "tests")),),
    "changelogs": (Files("/usr/share/doc", "*/changelog*.gz"),),
}


# A second corpus of other text on the machine, for checking that a ladder holds on data it was not built on.
OTHER_SOURCES: dict[str, tuple[Files, ...]] = {
    "c_headers": (Files("/usr/include", "**/*.h"),),
    "perl": (Files("/usr/share/perl", "**/*.pm"), Files("/usr/lib/x86_64-linux-gnu/perl-base", "**/*.pm")),
    "readmes": (Files("/usr/share/doc", "**/README*"), Files("/usr/share/doc", "**/NEWS*")),
    "python_packages": (Files(sysconfig.get_paths()["purelib"], "**/*.py", ("test", "tests")),),
}
SOURCE_SETS = {"default": SOURCES, "other": OTHER_SOURCES}


def _files(domain: str, sources: dict[str, tuple[Files, ...]]) -> list[Path]:
    if domain not in sources:
        raise ValueError(f"unknown local domain {domain!r}; known: {tuple(sources)}")
    return [p for files in sources[domain] for p in files.paths()]


def _chunks(text: str, max_doc_bytes: int) -> Iterator[str]:
    """Paragraph-aligned pieces of at most about max_doc_bytes characters."""
    if len(text) <= max_doc_bytes:
        yield text
        return
    piece: list[str] = []
    size = 0
    for para in text.split("\n\n"):
        if size and size + len(para) > max_doc_bytes:
            yield "\n\n".join(piece)
            piece, size = [], 0
        piece.append(para[:max_doc_bytes])
        size += len(para) + 2
    if piece:
        yield "\n\n".join(piece)


def documents(domain: str, max_bytes: int, max_doc_bytes: int = 4000, min_doc_bytes: int = 200,
              sources: dict[str, tuple[Files, ...]] = SOURCES) -> Iterator[dict]:
    total, seen = 0, set()
    for path in _files(domain, sources):
        text = _read(path)
        if domain == "manpages":
            text = _strip_roff(text)
        text = text.strip()
        digest = hashlib.sha1(text.encode()).digest()
        if digest in seen:  # many packages ship identical copyright files
            continue
        seen.add(digest)
        for doc in _chunks(text, max_doc_bytes):
            if len(doc) < min_doc_bytes:
                continue
            yield {"text": doc, "meta": {"source": domain, "file": str(path)}}
            total += len(doc.encode())
            if total >= max_bytes:
                return


def build(out_dir: str | Path, mb_per_domain: float = 1.0, domains=DOMAINS, shards: int = 2,
          max_doc_bytes: int = 4000, sources: dict[str, tuple[Files, ...]] = SOURCES) -> list[Path]:
    """Write the corpus as `shards` JSON Lines files; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    streams = [documents(d, int(mb_per_domain * 1e6), max_doc_bytes, sources=sources) for d in domains]
    rows: list[dict] = []
    while streams:
        alive = []
        for s in streams:
            row = next(s, None)
            if row is not None:
                rows.append(row)
                alive.append(s)
        streams = alive
    paths = [out / f"corpus-{i:02d}.jsonl" for i in range(shards)]
    handles = [open(p, "w") for p in paths]
    try:
        for i, row in enumerate(rows):  # contiguous slices: every shard holds every domain
            handles[i * shards // len(rows)].write(json.dumps(row) + "\n")
    finally:
        for h in handles:
            h.close()
    return paths


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--mb-per-domain", type=float, default=1.0)
    p.add_argument("--sources", choices=sorted(SOURCE_SETS), default="default",
                   help="default: " + ", ".join(SOURCES) + "; other: " + ", ".join(OTHER_SOURCES))
    p.add_argument("--domains", help="the domains to keep, comma-separated (default: every domain of --sources)")
    p.add_argument("--shards", type=int, default=2)
    a = p.parse_args(argv)
    sources = SOURCE_SETS[a.sources]
    domains = a.domains.split(",") if a.domains else list(sources)
    paths = build(a.out_dir, a.mb_per_domain, domains, a.shards, sources=sources)
    print("\n".join(str(x) for x in paths))


if __name__ == "__main__":
    main()
