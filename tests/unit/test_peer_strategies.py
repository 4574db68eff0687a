import numpy as np

from shared.core.peers import badge, cluster_margin, k_center_greedy, kmeans, typiclust


def blobs(rng, centres=4, per=25, dim=6):
    c = rng.normal(scale=10, size=(centres, dim))
    x = np.vstack([c[i] + rng.normal(size=(per, dim)) for i in range(centres)])
    return x, np.repeat(np.arange(centres), per)


def test_k_center_covers_every_blob_before_a_second_pick_in_any():
    rng = np.random.default_rng(0)
    x, y = blobs(rng)
    idx = k_center_greedy(x, np.zeros((0, 6)), 4)
    assert sorted(y[idx].tolist()) == [0, 1, 2, 3]
    labeled = x[y == 0][:1]  # blob 0 already has a label: the first pick is elsewhere
    assert y[k_center_greedy(x, labeled, 1)[0]] != 0


def test_kmeans_finds_separated_blobs():
    rng = np.random.default_rng(1)
    x, y = blobs(rng)
    assign = kmeans(x, 4, rng)
    assert all(len(set(assign[y == b].tolist())) == 1 for b in range(4))


def test_typiclust_takes_uncovered_clusters_first():
    rng = np.random.default_rng(2)
    x, y = blobs(rng)
    labeled = np.vstack([x[y == 0][:3], x[y == 1][:3]])
    idx = typiclust(x, labeled, 2, rng, min_cluster=1)
    assert set(y[idx].tolist()) == {2, 3}


def test_badge_spreads_over_uncertain_gradients_and_cluster_margin_over_clusters():
    rng = np.random.default_rng(3)
    x, y = blobs(rng, per=30)
    p = np.full((len(x), 2), 0.5)
    p[:, 0] += rng.uniform(0, 0.4, len(x))
    p[:, 1] = 1 - p[:, 0]
    idx = badge(p, x, 8, rng)
    assert len(set(idx.tolist())) == 8 and len(set(y[idx].tolist())) >= 3
    idx = cluster_margin(p, x, 8, rng, shortlist_factor=10)
    assert len(set(idx.tolist())) == 8 and len(set(y[idx].tolist())) == 4


def test_badge_never_builds_the_candidates_gram_matrix():
    """The default's overconfident arm runs on the store's shortlist (up to 50,000 candidates): its
    memory grows with n, not n² (6,000 candidates: a Gram matrix alone would take 288 MB)."""
    import tracemalloc

    from shared.core.peers import badge

    rng = np.random.default_rng(0)
    n = 6000
    p = rng.dirichlet(np.ones(10), size=n).astype(np.float32)
    h = rng.normal(size=(n, 64)).astype(np.float32)
    tracemalloc.start()
    try:
        picks = badge(p, h, 50, rng)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(set(picks.tolist())) == 50
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.0f} MiB"
