"""Domains for unlabelled text, after c-BTM (Gururangan et al. 2023): tf-idf, truncated SVD,
L2 normalisation, and balanced k-means fitted on a sample; then every document goes to its nearest
centroid. The fitted model is saved (pickle) and reused; a summary of the clusters is written beside it."""
from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def _balanced_assign(x: np.ndarray, centroids: np.ndarray, capacity: int) -> np.ndarray:
    """Greedy capacity-constrained assignment: the most similar (point, centroid) pairs first."""
    sim = x @ centroids.T  # [n, K] cosine (rows of x and centroids are unit vectors)
    n, k = sim.shape
    order = np.argsort(-sim, axis=None, kind="stable")
    labels = np.full(n, -1)
    load = np.zeros(k, dtype=int)
    for flat in order:
        i, c = divmod(int(flat), k)
        if labels[i] < 0 and load[c] < capacity:
            labels[i] = c
            load[c] += 1
            if (labels >= 0).all():
                break
    return labels


def balanced_kmeans(x: np.ndarray, k: int, seed: int, iters: int = 20) -> np.ndarray:
    """Spherical k-means whose assignment step gives every cluster at most ceil(n / k) points."""
    from sklearn.cluster import KMeans

    if len(x) < k:
        raise ValueError(f"cannot make {k} clusters from {len(x)} sample documents")
    centroids = KMeans(k, n_init=4, random_state=seed).fit(x).cluster_centers_
    capacity = -(-len(x) // k)
    labels = None
    for _ in range(iters):
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        new = _balanced_assign(x, centroids, capacity)
        if labels is not None and (new == labels).all():
            break
        labels = new
        centroids = np.stack([x[labels == c].mean(0) if (labels == c).any() else centroids[c] for c in range(k)])
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    return centroids


@dataclass
class ClusterModel:
    vectorizer: object
    svd: object
    centroids: np.ndarray

    def embed(self, texts: list[str]) -> np.ndarray:
        z = self.svd.transform(self.vectorizer.transform(texts))
        return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)

    def predict(self, texts: list[str]) -> np.ndarray:
        return np.argmax(self.embed(texts) @ self.centroids.T, axis=1)

    def top_terms(self, n: int = 12) -> list[list[str]]:
        terms = np.asarray(self.vectorizer.get_feature_names_out())
        weights = self.centroids @ self.svd.components_  # back to tf-idf space
        return [terms[np.argsort(-w)[:n]].tolist() for w in weights]

    @classmethod
    def fit(cls, texts: list[str], k: int, svd_components: int = 100, max_features: int = 50000,
            seed: int = 0) -> "ClusterModel":
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectorizer = TfidfVectorizer(max_features=max_features, sublinear_tf=True, stop_words="english",
                                     min_df=2, max_df=0.9, dtype=np.float32)
        tfidf = vectorizer.fit_transform(texts)
        n_comp = max(1, min(svd_components, tfidf.shape[1] - 1, len(texts) - 1))
        svd = TruncatedSVD(n_comp, random_state=seed).fit(tfidf)
        model = cls(vectorizer, svd, np.zeros((k, n_comp)))
        model.centroids = balanced_kmeans(model.embed(texts), k, seed)
        return model


def cached_model(cache_dir: Path, key: str, sample_texts, cfg, snippets: int = 3) -> tuple[ClusterModel, Path]:
    """Fit (on a cache miss, from `sample_texts()`) or load the cluster model stored under cache_dir/key."""
    from ..store import build_once

    out = Path(cache_dir) / key
    model_path = out / "model.pkl"

    def fit(tmp: Path) -> None:
        texts = sample_texts()
        model = ClusterModel.fit(texts, cfg.n_clusters, cfg.svd_components, cfg.max_features, cfg.seed)
        write_summary(out, model, texts, snippets)
        with open(tmp, "wb") as f:
            pickle.dump(model, f)

    build_once(model_path, fit, lock=out / ".lock")
    with open(model_path, "rb") as f:
        return pickle.load(f), out


def write_summary(out: Path, model: ClusterModel, texts: list[str], snippets: int = 3) -> dict:
    z = model.embed(texts)
    sim = z @ model.centroids.T
    labels = sim.argmax(1)
    terms = model.top_terms()
    clusters = []
    for c in range(len(model.centroids)):
        members = np.flatnonzero(labels == c)
        best = members[np.argsort(-sim[members, c])][:snippets]
        clusters.append({"cluster": f"c{c}", "sample_documents": int(len(members)), "top_terms": terms[c],
                         "snippets": [" ".join(texts[i][:240].split()) for i in best]})
    summary = {"sample_documents": len(texts), "clusters": clusters}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = [f"# Clusters ({len(texts)} sample documents)", ""]
    for c in clusters:
        lines += [f"## {c['cluster']}: {c['sample_documents']} documents", "",
                  "top terms: " + ", ".join(c["top_terms"]), ""] + [f"> {s}" for s in c["snippets"]] + [""]
    (out / "summary.md").write_text("\n".join(lines))
    return summary
