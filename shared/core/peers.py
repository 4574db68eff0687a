"""Published batch strategies, as their papers describe them, for the benchmark suite.

Each picks from the same margin shortlist as the default, with the logged embeddings standing in for
the network's penultimate layer. They are peers to measure the default against (``al simulate
--strategies badge,...``); BADGE is also the default's arm for an overconfident model
(:mod:`shared.core.adaptive`). docs/label-efficiency.md has the numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shared.core import uncertainty
from shared.core.strategies import BatchPicker, BatchStrategy, register
from shared.ports import CandidateSet, LabeledSet


def _labeled_rows(labeled: LabeledSet, dim: int) -> np.ndarray:
    if labeled.embeddings is None:
        return np.zeros((0, dim))
    ref = np.asarray(labeled.embeddings, dtype=np.float64)
    return ref[~np.isnan(ref).any(axis=1)]


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def badge(proba: np.ndarray, embeddings: np.ndarray, k: int, rng: np.random.Generator,
          chosen: Sequence[int] = ()) -> np.ndarray:
    """BADGE (Ash et al., ICLR 2020): k-means++ seeding over gradient embeddings
    g = (p - onehot(argmax p)) ⊗ h, the gradient of the cross-entropy at the predicted label with
    respect to the last layer. Distances come from the factorised inner product
    <g_i, g_j> = <a_i, a_j><h_i, h_j>, one Gram column per pick: neither g (classes × width) nor the
    n × n Gram matrix is built, so memory stays O(n) on a 50,000-candidate shortlist. The first centre is
    the largest gradient (as in the authors' code), then D² sampling; with ``chosen`` the seeding
    continues from those centres. Returns ``chosen`` followed by the new picks."""
    p = np.asarray(proba, dtype=np.float64)
    h = np.asarray(embeddings, dtype=np.float64)
    a = p.copy()
    a[np.arange(len(p)), p.argmax(axis=1)] -= 1.0
    sq = (a * a).sum(axis=1) * (h * h).sum(axis=1)  # |g_i|^2

    def dist2(j: int) -> np.ndarray:  # |g_i - g_j|^2 for every i: one Gram column, O(n) memory
        return np.maximum(sq + sq[j] - 2.0 * (a @ a[j]) * (h @ h[j]), 0.0)

    k = min(k, len(p))
    picks = [int(i) for i in chosen]
    if not picks:
        picks.append(int(np.argmax(sq)))
    d2 = np.full(len(p), np.inf)
    for j in picks:
        d2 = np.minimum(d2, dist2(j))
    while len(picks) < k:
        d2[picks] = 0.0
        total = d2.sum()
        if total <= 0:  # every candidate left coincides with a centre: fill by gradient size
            taken = set(picks)
            picks.extend([int(i) for i in np.argsort(-sq, kind="stable") if int(i) not in taken][: k - len(picks)])
            break
        j = int(rng.choice(len(p), p=d2 / total))
        picks.append(j)
        d2 = np.minimum(d2, dist2(j))
    return np.asarray(picks[:k], dtype=np.int64)


def k_center_greedy(embeddings: np.ndarray, labeled_embeddings: np.ndarray, k: int) -> np.ndarray:
    """Core-set k-center greedy (Sener & Savarese, ICLR 2018): repeatedly take the candidate
    farthest (Euclidean) from its nearest labeled or already chosen point."""
    x = np.asarray(embeddings, dtype=np.float64)
    k = min(k, len(x))
    has_ref = len(labeled_embeddings) > 0
    d = np.sqrt(_sq_dists(x, labeled_embeddings).min(axis=1)) if has_ref else np.full(len(x), np.inf)
    chosen: list[int] = []
    for _ in range(k):
        d[chosen] = -1.0
        j = int(np.argmax(d)) if np.isfinite(d).any() or chosen else 0
        chosen.append(j)
        d = np.minimum(d, np.sqrt(_sq_dists(x, x[j : j + 1])[:, 0]))
    return np.asarray(chosen, dtype=np.int64)


def kmeans(x: np.ndarray, n_clusters: int, rng: np.random.Generator, iters: int = 20) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; returns each row's cluster."""
    n = len(x)
    n_clusters = min(n_clusters, n)
    sq = (x * x).sum(1)
    centres = [int(rng.integers(n))]
    d2 = np.maximum(sq + sq[centres[0]] - 2.0 * x @ x[centres[0]], 0.0)
    for _ in range(1, n_clusters):
        total = d2.sum()
        j = int(rng.choice(n, p=d2 / total)) if total > 0 else int(rng.integers(n))
        centres.append(j)
        d2 = np.minimum(d2, np.maximum(sq + sq[j] - 2.0 * x @ x[j], 0.0))
    c = x[centres].copy()
    assign = np.zeros(n, dtype=np.int64)
    for it in range(iters):
        new = _sq_dists(x, c).argmin(axis=1)
        if it and np.array_equal(new, assign):
            break
        assign = new
        counts = np.bincount(assign, minlength=len(c))
        sums = np.zeros_like(c)
        np.add.at(sums, assign, x)
        filled = counts > 0
        c[filled] = sums[filled] / counts[filled, None]
    return assign


def typiclust(embeddings: np.ndarray, labeled_embeddings: np.ndarray, k: int, rng: np.random.Generator,
              *, max_clusters: int = 500, min_cluster: int = 5, knn: int = 20) -> np.ndarray:
    """TypiClust (Hacohen et al., ICML 2022): k-means over labeled + candidates into
    min(|L| + k, 500) clusters; repeatedly take the cluster with the fewest labeled points (then
    the largest, ignoring clusters under 5 points) and pick its most typical candidate, typicality
    being the inverse mean distance to its 20 nearest neighbours in the cluster."""
    x = np.asarray(embeddings, dtype=np.float64)
    ref = np.asarray(labeled_embeddings, dtype=np.float64)
    k = min(k, len(x))
    allx = np.vstack([ref, x]) if len(ref) else x
    n_ref = len(ref)
    assign = kmeans(allx, min(n_ref + k, max_clusters, len(allx)), rng)
    n_clusters = int(assign.max()) + 1
    sizes = np.bincount(assign, minlength=n_clusters)
    covered = np.bincount(assign[:n_ref], minlength=n_clusters).astype(float)
    cand_cluster = assign[n_ref:]
    taken = np.zeros(len(x), dtype=bool)
    chosen: list[int] = []
    while len(chosen) < k:
        open_ = np.array([c for c in range(n_clusters) if (~taken[cand_cluster == c]).any()])
        big = open_[sizes[open_] >= min_cluster]
        pool = big if len(big) else open_
        c = pool[np.lexsort((-sizes[pool], covered[pool]))[0]]
        members = np.flatnonzero(assign == c)
        pts = allx[members]
        m = min(knn, len(members) - 1)
        if m > 0:
            d = np.sqrt(_sq_dists(pts, pts))
            typ = 1.0 / (np.sort(d, axis=1)[:, 1 : m + 1].mean(axis=1) + 1e-12)
        else:
            typ = np.ones(len(members))
        cand_members = members >= n_ref
        options = np.flatnonzero(cand_members & ~np.isin(members - n_ref, np.flatnonzero(taken)))
        j = int(members[options[np.argmax(typ[options])]] - n_ref)
        chosen.append(j)
        taken[j] = True
        covered[c] += 1
    return np.asarray(chosen, dtype=np.int64)


def cluster_margin(proba: np.ndarray, embeddings: np.ndarray, k: int, rng: np.random.Generator,
                   *, shortlist_factor: int = 10) -> np.ndarray:
    """Cluster-Margin (Citovsky et al., NeurIPS 2021): average-linkage agglomerative clusters;
    the ``10 k`` lowest-margin candidates, grouped by cluster; clusters visited smallest first,
    round-robin, one random member each, until k are chosen. The paper clusters the pool once;
    here every round brings a fresh sample, so the shortlist is clustered each round, cut into k
    clusters."""
    from scipy.cluster.hierarchy import fcluster, linkage

    x = np.asarray(embeddings, dtype=np.float64)
    k = min(k, len(x))
    order = np.argsort(uncertainty.margin(proba), kind="stable")[: max(k, shortlist_factor * k)]
    if len(order) <= k:
        return order.astype(np.int64)
    labels = fcluster(linkage(x[order], method="average", metric="euclidean"), t=k, criterion="maxclust")
    groups = [list(rng.permutation(order[labels == c])) for c in np.unique(labels)]
    groups.sort(key=len)
    chosen: list[int] = []
    while len(chosen) < k:
        for g in groups:
            if g and len(chosen) < k:
                chosen.append(int(g.pop()))
    return np.asarray(chosen, dtype=np.int64)


def _without_embeddings(pick: BatchPicker) -> BatchPicker:
    """No embeddings logged: every peer degrades to margin order with pair capping."""
    def wrapped(cands: CandidateSet, labeled: LabeledSet, k: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if cands.embeddings is None:
            from shared.core.batch import PAIR_CAPPED_MARGIN

            return PAIR_CAPPED_MARGIN.pick(cands, labeled, k, rng)
        return pick(cands, labeled, k, rng)
    return wrapped


def _scores(cands: CandidateSet, idx: np.ndarray) -> np.ndarray:
    return 1.0 - uncertainty.margin(cands.probabilities[idx])


def _emb(cands: CandidateSet) -> np.ndarray:
    assert cands.embeddings is not None
    return np.asarray(cands.embeddings, dtype=np.float64)


def _pick_badge(cands: CandidateSet, labeled: LabeledSet, k: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    idx = badge(cands.probabilities, _emb(cands), k, rng)
    return idx, _scores(cands, idx)


def _pick_k_center(cands: CandidateSet, labeled: LabeledSet, k: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = _emb(cands)
    idx = k_center_greedy(x, _labeled_rows(labeled, x.shape[1]), k)
    return idx, _scores(cands, idx)


def _pick_typiclust(cands: CandidateSet, labeled: LabeledSet, k: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = _emb(cands)
    idx = typiclust(x, _labeled_rows(labeled, x.shape[1]), k, rng)
    return idx, _scores(cands, idx)


def _pick_cluster_margin(cands: CandidateSet, labeled: LabeledSet, k: int,
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    idx = cluster_margin(cands.probabilities, _emb(cands), k, rng)
    return idx, _scores(cands, idx)


BADGE = register(BatchStrategy("badge", _without_embeddings(_pick_badge), needs_embeddings=True,
                               description="BADGE: k-means++ over last-layer gradient embeddings"))
K_CENTER = register(BatchStrategy("k_center", _without_embeddings(_pick_k_center), needs_embeddings=True,
                                  description="core-set k-center greedy over embeddings"))
TYPICLUST = register(BatchStrategy("typiclust", _without_embeddings(_pick_typiclust), needs_embeddings=True,
                                   description="TypiClust: the most typical item of uncovered k-means clusters"))
CLUSTER_MARGIN = register(BatchStrategy(
    "cluster_margin", _without_embeddings(_pick_cluster_margin), needs_embeddings=True,
    description="Cluster-Margin: round-robin over clusters of the 10k lowest margins",
    requires=("scipy",)))  # hierarchical clustering; not among the function apps' packages
