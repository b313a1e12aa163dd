"Shared test helpers (pytest puts tests/ on sys.path, so test files `from helpers import ...`)."
import torch


def rec_like_masks(n=2, size=16, seed=0):
    "Per-channel random kept rectangles of side size/2 (1 = kept), like REC masks, built without mde.masks."
    g = torch.Generator().manual_seed(seed)
    M = torch.zeros(n, 3, size, size)
    for i in range(n):
        for c in range(3):
            t, l = torch.randint(0, size // 2, (2,), generator=g).tolist()
            M[i, c, t:t + size // 2, l:l + size // 2] = 1
    return M


def assert_same_weights(a, b):
    "Two {net: state_dict} mappings hold exactly equal tensors."
    assert a.keys() == b.keys()
    for net in a:
        for k in a[net]: assert torch.equal(a[net][k], b[net][k]), f'{net}.{k} differs'
