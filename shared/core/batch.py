"""Batch-aware strategies: pure NumPy over every candidate of a selection.

Plain top-k by uncertainty fills a batch with near-duplicates (many items confused between the
same two classes) and with items no label will fix. These strategies spread the batch out.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import numpy as np

from shared.core import uncertainty
from shared.core.strategies import BatchPicker, BatchStrategy, register
from shared.ports import CandidateSet, LabeledSet


def pair_capped_margin(
    proba: np.ndarray, item_ids: np.ndarray, k: int, *, cap: int = 2
) -> np.ndarray:
    """Margin order, but at most ``cap`` items per confused class pair (top-1, top-2) until the
    batch would otherwise stay short; ties by item id. Returns indices in pick order."""
    margins = uncertainty.margin(proba)
    order = np.lexsort((np.asarray(item_ids, dtype=str), margins))
    top2 = np.argsort(-proba, axis=1, kind="stable")[:, :2]
    pairs = np.sort(top2, axis=1)
    pair_key = pairs[:, 0] * proba.shape[1] + pairs[:, 1]
    taken: dict[int, int] = {}
    chosen, overflow = [], []
    for i in order:
        key = int(pair_key[i])
        if taken.get(key, 0) < cap:
            taken[key] = taken.get(key, 0) + 1
            chosen.append(i)
            if len(chosen) == k:
                break
        else:
            overflow.append(i)
    chosen.extend(overflow[: k - len(chosen)])
    return np.asarray(chosen, dtype=np.int64)


def _pick_pair_capped(cands: CandidateSet, labeled: LabeledSet, k: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    idx = pair_capped_margin(cands.probabilities, cands.item_ids, k)
    return idx, uncertainty.margin(cands.probabilities[idx])


PAIR_CAPPED_MARGIN = register(BatchStrategy(
    "pair_capped_margin", _pick_pair_capped, needs_embeddings=False,
    description="margin order with at most 2 items per confused class pair",
))


EmbeddingPick = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def _with_labeled_embeddings(fn: EmbeddingPick) -> BatchPicker:
    """A batch picker for ``fn(probabilities, embeddings, labeled embeddings, item ids, k)``: without
    logged embeddings it degrades to diversity by class pair; labels logged under another embedding
    width (an older model) are not comparable, so they are left out."""
    def pick(cands: CandidateSet, labeled: LabeledSet, k: int,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if cands.embeddings is None:
            return _pick_pair_capped(cands, labeled, k, rng)
        width = cands.embeddings.shape[1]
        ref = labeled.embeddings if labeled.embeddings is not None else np.zeros((0, width))
        if ref.shape[1] != width:
            ref = np.zeros((0, width))
        return fn(cands.probabilities, cands.embeddings, ref, cands.item_ids, k)
    return pick


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _unit_inputs(embeddings: np.ndarray, labeled_embeddings: np.ndarray,
                 item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit-norm candidate rows, unit-norm labeled rows (NaN rows dropped), and each candidate's rank
    by item id (the tie-break)."""
    emb = _unit_rows(np.asarray(embeddings, dtype=np.float64))
    ref = np.asarray(labeled_embeddings, dtype=np.float64)
    ref = _unit_rows(ref[~np.isnan(ref).any(axis=1)]) if ref.size else ref.reshape(0, emb.shape[1])
    tiebreak = np.argsort(np.argsort(np.asarray(item_ids, dtype=str), kind="stable"), kind="stable")
    return emb, ref, tiebreak


def distance_weighted_margin(
    proba: np.ndarray,
    embeddings: np.ndarray,
    labeled_embeddings: np.ndarray,
    item_ids: np.ndarray,
    k: int,
    *,
    gamma: float = 1.0,
    greedy: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Pick by ``(1 - margin) * d ** gamma``, where d is the cosine distance from an item to the
    nearest labeled item (rows are L2-normalised first: the default features already are, a user's
    own vectors may not be).

    Items the model is unsure about *and* unlike anything labeled come first: an inherently
    ambiguous item (0/O, l/I) sits next to labeled look-alikes, so its weight falls once a few of
    them are labeled, instead of absorbing the batch round after round. With ``greedy`` each pick
    counts as labeled for the rest of the batch, which spreads the batch out. Ties by item id.
    Returns (indices in pick order, their scores).
    """
    n = len(proba)
    k = min(k, n)
    uncertainty_ = 1.0 - uncertainty.margin(proba)
    emb, ref, tiebreak = _unit_inputs(embeddings, labeled_embeddings, item_ids)
    d = np.ones(n) if len(ref) == 0 else nearest_distance(emb, ref)
    if not greedy:
        score = uncertainty_ * d**gamma
        order = np.lexsort((tiebreak, -score))[:k]
        return order, score[order]
    return lazy_greedy(uncertainty_, d, emb, tiebreak, k, lambda dist: dist**gamma)


def lazy_greedy(
    base: np.ndarray, d: np.ndarray, emb: np.ndarray, tiebreak: np.ndarray, k: int,
    weight: Callable[[np.ndarray], np.ndarray], *, grad: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The greedy batch ``argmax base * weight(d)``, each pick then counting as labeled (d, the cosine
    distance to the nearest labeled or picked unit row, can only shrink), ties by ``tiebreak``.

    With ``grad`` (the class part ``a`` of each candidate's gradient embedding ``g = a ⊗ emb``, see
    :func:`gradient_spaced`), ``base`` is a distance too: from ``g`` to the nearest of the origin and
    the picks' ``g``, which also only shrinks as picks are made.

    Exact, and lazy: the score never grows as picks are made, so a score computed against fewer picks
    is an upper bound. A heap holds those bounds; the top is brought up to date against the picks made
    since, and taken only when it is still the best — the same picks as rescoring every candidate at
    every step, at the cost of the few candidates near each pick instead of k full passes (a sort of
    the whole shortlist per pick took seconds for k = 1,000 of 50,000). Returns (indices in pick
    order, their scores).
    """
    n = len(base)
    k = min(k, n)
    d = np.array(d, dtype=np.float64)
    base = np.array(base, dtype=np.float64)
    score = base * weight(d)
    heap = list(zip((-score).tolist(), tiebreak.tolist(), range(n), [0] * n, strict=True))
    heapq.heapify(heap)
    chosen: list[int] = []
    scores: list[float] = []
    picked = np.empty((k, emb.shape[1]), dtype=emb.dtype)  # the picks' rows, in order (views, no copies)
    if grad is not None:
        picked_grad = np.empty((k, grad.shape[1]), dtype=grad.dtype)
        picked_sq = np.empty(k)  # the picks' |g|^2 = |a|^2 |emb|^2 = |a|^2 (unit rows), in order
    while len(chosen) < k and heap:
        neg, tb, i, seen = heapq.heappop(heap)
        if seen < len(chosen):  # stale: catch up with the picks made since it was scored
            sims = picked[seen : len(chosen)] @ emb[i]
            d[i] = min(d[i], min(max(1.0 - float(sims.max()), 0.0), 2.0))
            if grad is not None:  # |g_i - g_j|^2 = |a_i|^2 + |a_j|^2 - 2 <a_i, a_j> <e_i, e_j>
                g2 = (grad[i] @ grad[i] + picked_sq[seen : len(chosen)]
                      - 2.0 * (picked_grad[seen : len(chosen)] @ grad[i]) * sims)
                base[i] = min(base[i], float(np.sqrt(max(float(g2.min()), 0.0))))
            heapq.heappush(heap, (-float(base[i] * weight(d[i : i + 1])[0]), tb, i, len(chosen)))
            continue
        picked[len(chosen)] = emb[i]
        if grad is not None:
            picked_grad[len(chosen)] = grad[i]
            picked_sq[len(chosen)] = grad[i] @ grad[i]
        chosen.append(i)
        scores.append(-neg)
    return np.asarray(chosen, dtype=np.int64), np.asarray(scores)


DISTANCE_MARGIN = register(BatchStrategy(
    "distance_margin", _with_labeled_embeddings(distance_weighted_margin), needs_embeddings=True,
    description="(1 - margin) x cosine distance to the nearest labeled or already picked item",
))


def nearest_distance(x: np.ndarray, ref: np.ndarray, *, chunk: int = 4096) -> np.ndarray:
    """Cosine distance from each unit row of ``x`` to its nearest unit row of ``ref`` (2 when
    ``ref`` is empty), in chunks of ``ref`` so memory stays bounded for a large labeled set."""
    # float32: the n x labeled product is the strategy's one big cost, and a cosine of unit rows needs
    # no more precision than that (float64 took twice as long for the same picks).
    x32, ref32 = np.asarray(x, dtype=np.float32), np.asarray(ref, dtype=np.float32)
    best = np.full(len(x), -1.0, dtype=np.float32)
    for start in range(0, len(ref), chunk):
        best = np.maximum(best, (x32 @ ref32[start : start + chunk].T).max(axis=1))
    return np.clip(1.0 - best.astype(np.float64), 0.0, 2.0)


def labeled_spacing(ref: np.ndarray, *, sample: int = 1000) -> float:
    """The median cosine distance from a labeled item to its nearest other labeled item: how far
    apart the loop's own labels lie. Measured on at most ``sample`` evenly spaced rows (the labeled
    set is sorted by item id), each against every labeled row."""
    n = len(ref)
    rows = np.unique(np.linspace(0, n - 1, min(n, sample)).round().astype(int))
    best = np.full(len(rows), -1.0)
    for start in range(0, n, 4096):
        sims = ref[rows] @ ref[start : start + 4096].T
        own = (rows >= start) & (rows < start + 4096)
        sims[np.flatnonzero(own), rows[own] - start] = -np.inf  # not itself
        best = np.maximum(best, sims.max(axis=1))
    return float(np.median(np.clip(1.0 - best, 0.0, 2.0)))


def spaced_margin(
    proba: np.ndarray,
    embeddings: np.ndarray,
    labeled_embeddings: np.ndarray,
    item_ids: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Pick greedily by ``(1 - margin) * min(1, d / s)``: d is the cosine distance from an item to
    the nearest labeled or already picked item, s the labeled set's own spacing
    (:func:`labeled_spacing`; with fewer than two labeled rows, the candidates' spacing).

    An uncertain item closer to something labeled (or picked for this batch) than labeled items
    usually are to each other is largely redundant, so its weight falls in proportion; past that
    spacing, distance adds nothing and the order is plain margin, so rare, far-off outliers get no
    bonus (the weakness of :func:`distance_weighted_margin` on data where far-off means atypical).
    The spacing is measured on the loop's own labels every round: as labels fill the space it
    shrinks, and the picks move from spread-out towards plain uncertainty. Rows are L2-normalised
    first; NaN rows of the labeled set are ignored; ties by item id. Returns (indices in pick order,
    their scores).
    """
    n = len(proba)
    k = min(k, n)
    unc = 1.0 - uncertainty.margin(proba)
    emb, ref, tiebreak = _unit_inputs(embeddings, labeled_embeddings, item_ids)
    spacing, d = _spacing_and_distance(emb, ref)
    return lazy_greedy(unc, d, emb, tiebreak, k, lambda dist: np.minimum(1.0, dist / spacing))


def _spacing_and_distance(emb: np.ndarray, ref: np.ndarray) -> tuple[float, np.ndarray]:
    """The labeled set's spacing (the candidates' own with fewer than two labeled rows) and each
    candidate's cosine distance to the nearest labeled row (2 with none)."""
    spacing = max(labeled_spacing(ref) if len(ref) >= 2 else labeled_spacing(emb), 1e-9)
    d = nearest_distance(emb, ref) if len(ref) else np.full(len(emb), 2.0)
    return spacing, d


SPACED_MARGIN = register(BatchStrategy(
    "spaced_margin", _with_labeled_embeddings(spaced_margin), needs_embeddings=True,
    description="(1 - margin) x min(1, distance to the nearest labeled or picked item / the labeled set's spacing)",
))


def gradient_spaced(
    proba: np.ndarray,
    embeddings: np.ndarray,
    labeled_embeddings: np.ndarray,
    item_ids: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Farthest-first over gradient embeddings, discounted near the labeled set: greedily the highest
    ``D_g × min(1, d / s)``.

    ``g = (p − onehot(argmax p)) ⊗ e`` is the gradient of the cross-entropy at the predicted class
    with respect to a last layer over the embedding ``e`` (BADGE's gradient embedding, Ash et al.
    2020); ``D_g`` is the distance from ``g`` to the nearest of the origin and the picks' ``g``. The
    origin stands for what the model already fits: its distance is the gradient's size, an
    uncertainty. Two picks are far apart when the model is unsure between different classes, or about
    different-looking items, so the batch spreads over the model's confusions and not only over the
    input space. ``d`` and ``s`` are :func:`spaced_margin`'s: the cosine distance to the nearest
    labeled or picked item, and the labeled set's own spacing, so items that labels already cover lose
    weight in proportion. Deterministic (BADGE samples: greedy was better on glyphs67, sampling
    on photos17; docs/label-efficiency.md). The distances come from the factorised inner product
    ``<g_i, g_j> = <a_i, a_j> <e_i, e_j>``: ``g`` (classes × width per item) is never built. Rows are
    L2-normalised first; NaN rows of the labeled set are ignored; ties by item id. Returns (indices in
    pick order, their scores).
    """
    n = len(proba)
    k = min(k, n)
    emb, ref, tiebreak = _unit_inputs(embeddings, labeled_embeddings, item_ids)
    grad = np.array(proba, dtype=np.float64)
    grad[np.arange(n), grad.argmax(axis=1)] -= 1.0
    size = np.linalg.norm(grad, axis=1)  # distance to the origin, |g| (unit rows)
    spacing, d = _spacing_and_distance(emb, ref)
    return lazy_greedy(size, d, emb, tiebreak, k,
                       lambda dist: np.minimum(1.0, dist / spacing), grad=grad)


GRADIENT_SPACED = register(BatchStrategy(
    "gradient_spaced", _with_labeled_embeddings(gradient_spaced), needs_embeddings=True,
    description="farthest-first over gradient embeddings x min(1, distance to the nearest labeled or picked item / "
                "the labeled set's spacing)",
))
