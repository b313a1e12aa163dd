"""Tests for mde.masks: shapes, dtypes, statistics of every mask kind, reproducibility, occlusions, bad input."""
import math

import pytest
import torch

from mde.masks import (MASK_KINDS, MAX_ASPECT, OCCLUSIONS, OCCLUSION_BOXES, _coverage, _ratio_bounds, apply_mask,
                       boxes_to_masks, normalize_boxes, occlusion_mask, sample_boxes, sample_masks)

SIZES = [32, (24, 40), (40, 24), 2, (3, 17)]
STAT_SIZES = [32, (24, 40)]
SS = [0.1, 0.3, 0.5]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def hw(size):
    return (size, size) if isinstance(size, int) else size


def rounding_slack(h, w):
    "|h*w - S*H*W| bound: half a row or column of the box, plus the rounding of S*H*W itself."
    return torch.maximum(h, w).double() / 2 + 0.5


# ---------------------------------------------------------------- shapes, dtypes, devices

@pytest.mark.parametrize('kind', MASK_KINDS)
@pytest.mark.parametrize('size', SIZES)
def test_shapes_values_and_boxes_inside(kind, size):
    H, W = hw(size)
    M, B = sample_masks(kind, 16, size, 0.3, generator=gen(), return_boxes=True)
    assert M.shape == (16, 3, H, W) and M.dtype == torch.float32 and M.device.type == 'cpu'
    assert B.shape == (16, 3, 4) and B.dtype == torch.long
    assert set(M.unique().tolist()) <= {0.0, 1.0}
    t, l, h, w = B.unbind(-1)
    assert (t >= 0).all() and (l >= 0).all() and (t + h <= H).all() and (l + w <= W).all()
    assert (h >= 0).all() and (w >= 0).all()
    if kind not in ('color1', 'color2'):
        assert (h >= 1).all() and (w >= 1).all()
    # the mask is the box (or its complement for inpaint/center), channel by channel
    area = (h * w).float()
    expect = H * W - area if kind in ('inpaint', 'center', 'square') else area
    assert torch.equal(M.sum((2, 3)), expect)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_dtypes(dtype):
    M = sample_masks('rec', 4, 16, 0.2, generator=gen(), dtype=dtype)
    assert M.dtype == dtype
    assert torch.equal(M.float(), sample_masks('rec', 4, 16, 0.2, generator=gen()))
    assert occlusion_mask('mouth', 16, dtype=dtype).dtype == dtype


def test_device_cpu_and_generator_device():
    M = sample_masks('random', 3, 16, device='cpu', generator=gen())
    assert M.device.type == 'cpu'
    assert sample_masks('rec', 3, 16, device=torch.device('cpu')).device.type == 'cpu'   # generator=None
    assert sample_masks('rec', 3, 16).device.type == 'cpu'
    assert occlusion_mask('mouth', 16, device='cpu').device.type == 'cpu'
    with pytest.raises(ValueError, match='generator lives on cpu'):
        sample_masks('rec', 2, 16, generator=gen(), device='meta')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device on this machine')
def test_cuda_generator():
    g = torch.Generator(device='cuda').manual_seed(0)
    M = sample_masks('rec', 4, 32, 0.1, generator=g)                  # device follows the generator
    assert M.device.type == 'cuda'
    M2 = sample_masks('rec', 4, 32, 0.1, generator=torch.Generator(device='cuda').manual_seed(0), device='cuda')
    assert torch.equal(M, M2)
    with pytest.raises(ValueError, match='generator'):
        sample_masks('rec', 2, 32, generator=gen(), device='cuda')


# ---------------------------------------------------------------- reproducibility

@pytest.mark.parametrize('kind', MASK_KINDS)
def test_same_seed_same_masks(kind):
    a, ba = sample_masks(kind, 32, (24, 40), 0.2, generator=gen(7), return_boxes=True)
    b, bb = sample_masks(kind, 32, (24, 40), 0.2, generator=gen(7), return_boxes=True)
    assert torch.equal(a, b) and torch.equal(ba, bb)


@pytest.mark.parametrize('kind', ['color1', 'color2', 'random', 'rec'])
def test_different_seeds_differ(kind):
    a = sample_masks(kind, 32, 32, 0.2, generator=gen(1))
    b = sample_masks(kind, 32, 32, 0.2, generator=gen(2))
    assert not torch.equal(a, b)


def test_global_rng_when_no_generator():
    torch.manual_seed(3); a = sample_masks('rec', 8, 32)
    torch.manual_seed(3); b = sample_masks('rec', 8, 32)
    torch.manual_seed(4); c = sample_masks('rec', 8, 32)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_batch_is_not_one_repeated_mask():
    M = sample_masks('rec', 64, 32, 0.1, generator=gen())
    assert len({tuple(m.flatten().tolist()) for m in M}) > 60


# ---------------------------------------------------------------- areas and statistics

@pytest.mark.parametrize('kind', ['inpaint', 'reverse', 'random', 'rec'])
@pytest.mark.parametrize('size', STAT_SIZES + [(96, 96), (17, 63)])
@pytest.mark.parametrize('S', [0.05, 0.1, 0.3, 0.5, 0.9])
def test_box_area_within_rounding(kind, size, S):
    H, W = hw(size)
    B = sample_boxes(kind, 500, size, S, generator=gen())
    h, w = B[..., 2], B[..., 3]
    assert ((h * w - S * H * W).abs() <= rounding_slack(h, w)).all()


@pytest.mark.parametrize('size', STAT_SIZES + [(96, 96)])
def test_centred_box_has_image_aspect_ratio(size):
    H, W = hw(size)
    for S in SS:
        t, l, h, w = sample_boxes('reverse', 1, size, S)[0, 0].tolist()
        assert abs(h - H * math.sqrt(S)) <= 0.5 and abs(w - W * math.sqrt(S)) <= 1.5
        assert t == (H - h) // 2 and l == (W - w) // 2


@pytest.mark.parametrize('kind', ['reverse', 'random'])
@pytest.mark.parametrize('size', STAT_SIZES)
@pytest.mark.parametrize('S', SS)
def test_RI_RE_drop_exactly_1_minus_S(kind, size, S):
    "Per image: dropped fraction = 1 - box area / HW = 1 - S up to one row/column; same box in all channels."
    H, W = hw(size)
    M, B = sample_masks(kind, 300, size, S, generator=gen(), return_boxes=True)
    assert torch.equal(M[:, 0], M[:, 1]) and torch.equal(M[:, 0], M[:, 2])
    dropped = (M.sum(1) == 0).double().mean((1, 2))
    area = (B[:, 0, 2] * B[:, 0, 3]).double()
    assert torch.allclose(dropped, 1 - area / (H * W))
    assert ((dropped - (1 - S)).abs() <= (max(H, W) / 2 + 0.5) / (H * W)).all()
    corrupted = (M.sum(1) < 3).double().mean((1, 2))
    assert torch.equal(corrupted, dropped)


@pytest.mark.parametrize('size', STAT_SIZES)
@pytest.mark.parametrize('S', SS)
def test_inpaint_drops_S(size, S):
    H, W = hw(size)
    M = sample_masks('inpaint', 2, size, S)
    assert torch.equal(M, 1 - sample_masks('reverse', 2, size, S))
    assert abs((M.sum(1) == 0).double().mean().item() - S) <= (max(H, W) / 2 + 0.5) / (H * W)


@pytest.mark.parametrize('max_aspect', [MAX_ASPECT, None])
@pytest.mark.parametrize('size', STAT_SIZES)
@pytest.mark.parametrize('S', SS)
def test_REC_statistics_match_exact_expectation(size, S, max_aspect):
    "REC drops mean((1-p)^3) and corrupts mean(1-p^3), p = per-pixel coverage of a box (channels independent)."
    M = sample_masks('rec', 4000, size, S, generator=gen(11), max_aspect=max_aspect)
    kept = M.sum(1)
    dropped, corrupted = (kept == 0).double().mean().item(), (kept < 3).double().mean().item()
    p = _coverage(size, S, max_aspect=max_aspect)
    assert abs(p.mean().item() - S) < 0.01                       # coverage averages to the box area
    assert abs(M.mean().item() - S) < 0.01
    assert abs(dropped - ((1 - p) ** 3).mean().item()) < 0.01
    assert abs(corrupted - (1 - p ** 3).mean().item()) < 0.01
    # Jensen: non-uniform coverage drops at least the paper's (1-S)^3 and corrupts at most 1-S^3
    assert dropped >= (1 - S) ** 3 - 0.01 and corrupted <= 1 - S ** 3 + 0.01
    # channels are independent: no two channels share their box in most images
    assert (M[:, 0] != M[:, 1]).flatten(1).any(1).float().mean() > 0.95


@pytest.mark.parametrize('size', STAT_SIZES)
def test_REC_paper_figures_at_S_0_1(size):
    "Paper: at S = 0.1, REC drops 72.9% and corrupts 99.9% of the pixels on average (2% tolerance)."
    M = sample_masks('rec', 4000, size, 0.1, generator=gen(5))
    kept = M.sum(1)
    assert abs((kept == 0).double().mean().item() - 0.729) < 0.02
    assert abs((kept < 3).double().mean().item() - 0.999) < 0.02


def test_random_ratio_and_position_distribution():
    "max_aspect=None: log-uniform ratio over every ratio that fits (symmetric on a square image), uniform position."
    B = sample_boxes('rec', 4000, 64, 0.1, generator=gen(9), max_aspect=None).view(-1, 4).double()
    t, l, h, w = B.unbind(-1)
    logr = (w / h).log()
    A = round(0.1 * 64 * 64)
    lo, hi = math.log(A / 64 ** 2), math.log(64 ** 2 / A)
    assert abs(logr.mean().item()) < 0.05
    assert logr.min() >= lo - 0.1 and logr.max() <= hi + 0.1
    assert abs(logr.std().item() - (hi - lo) / math.sqrt(12)) < 0.05   # std of a uniform on [lo, hi]
    assert ((logr - lo) / (hi - lo) < 0.25).float().mean().sub(0.25).abs() < 0.03
    for pos, side in ((t, h), (l, w)):
        rel = (pos + 0.5) / (64 - side + 1)                             # uniform on (0, 1) if pos uniform
        assert abs(rel.mean().item() - 0.5) < 0.02
        assert (rel < 0.2).double().mean().sub(0.2).abs() < 0.03


# ---------------------------------------------------------------- the aspect-ratio cap (max_aspect)

def old_random_boxes(m, H, W, S, generator):
    "The rule before max_aspect existed, written out: log-uniform over every ratio that fits, uniform position."
    A = min(H * W, max(1, round(S * H * W)))
    lo, hi = math.log(max(A / H**2, 1 / A)), math.log(min(W**2 / A, A))
    u = torch.rand(3, m, generator=generator)
    h = (A / torch.exp(lo + (hi - lo) * u[0])).sqrt().round().clamp(1, H)
    w = (A / h).round().clamp(1, W)
    top = torch.minimum((u[1] * (H - h + 1)).floor(), H - h)
    left = torch.minimum((u[2] * (W - w + 1)).floor(), W - w)
    return torch.stack([top, left, h, w], -1).long()


def box_ratios(B):
    "w/h of every box of B (..., 4), and the tolerance on log(w/h) from rounding the sides to whole pixels."
    h, w = B.reshape(-1, 4)[:, 2:].double().T
    return w / h, 1 / h + 0.5 / w


def test_max_aspect_default_is_3():
    assert MAX_ASPECT == 3.0
    assert torch.equal(sample_boxes('rec', 50, 64, 0.1, generator=gen(4)),
                       sample_boxes('rec', 50, 64, 0.1, generator=gen(4), max_aspect=3))


@pytest.mark.parametrize('size', [32, 96])
@pytest.mark.parametrize('S', SS)
def test_ratio_bounds_at_max_aspect_3(size, S):
    "log-uniform in [1/3, 3] clipped to what fits ([S, 1/S] on a square image); the drawn boxes fill that range."
    A = min(size * size, max(1, round(S * size * size)))
    lo, hi = _ratio_bounds(size, size, A, 3)
    assert math.isclose(math.exp(lo), max(1 / 3, A / size**2)) and math.isclose(math.exp(hi), min(3, size**2 / A))
    if S <= 0.3:                                                        # the same range at every S <= 1/3
        assert math.isclose(lo, -math.log(3)) and math.isclose(hi, math.log(3))
    for kind in ('rec', 'random'):
        r, tol = box_ratios(sample_boxes(kind, 2000, size, S, generator=gen(2)))
        logr = r.log()
        assert (logr >= lo - tol).all() and (logr <= hi + tol).all()
        assert logr.min() < lo + 0.1 and logr.max() > hi - 0.1          # both ends are reached
        u = (logr - lo) / (hi - lo)                                     # ~ uniform on [0, 1] (up to rounding)
        assert abs(u.mean().item() - 0.5) < 0.05 and abs(u.std().item() - 1 / math.sqrt(12)) < 0.05


def test_ratio_bounds_clipping_and_none():
    for H, W, A in [(32, 32, 102), (96, 96, 922), (24, 40, 192), (10, 100, 500), (17, 63, 500), (2, 2, 1)]:
        lo0, hi0 = _ratio_bounds(H, W, A)
        assert (lo0, hi0) == (math.log(max(A / H**2, 1 / A)), math.log(min(W**2 / A, A)))  # None: all that fits
        assert _ratio_bounds(H, W, A, None) == (lo0, hi0) == _ratio_bounds(H, W, A, math.inf)
        for a in (1, 1.5, 3, 10):
            lo, hi = _ratio_bounds(H, W, A, a)
            assert lo0 <= lo <= hi <= hi0                               # always a ratio that fits
            if max(lo0, -math.log(a)) <= min(hi0, math.log(a)):         # ranges meet: their intersection
                assert (lo, hi) == (max(lo0, -math.log(a)), min(hi0, math.log(a)))
    assert _ratio_bounds(10, 100, 500, 3) == (math.log(5), math.log(5))  # disjoint: the nearest ratio that fits
    assert _ratio_bounds(96, 96, 922, 1) == (0.0, 0.0)                   # max_aspect 1: squares


@pytest.mark.parametrize('size', [32, 96, (24, 40), (17, 63)])
@pytest.mark.parametrize('S', [0.05, 0.1, 0.3, 0.5, 0.9])
def test_max_aspect_none_is_the_old_rule_bit_for_bit(size, S):
    H, W = hw(size)
    ref = old_random_boxes(3 * 200, H, W, S, gen(6))
    assert torch.equal(sample_boxes('rec', 200, size, S, generator=gen(6), max_aspect=None), ref.view(200, 3, 4))
    ref = old_random_boxes(200, H, W, S, gen(6))[:, None].expand(200, 3, 4)
    assert torch.equal(sample_boxes('random', 200, size, S, generator=gen(6), max_aspect=None), ref)
    assert torch.equal(sample_boxes('rec', 200, size, S, generator=gen(6), max_aspect=math.inf),
                       old_random_boxes(3 * 200, H, W, S, gen(6)).view(200, 3, 4))


def test_none_draws_strips_the_cap_does_not():
    r0, _ = box_ratios(sample_boxes('rec', 2000, 96, 0.1, generator=gen(3), max_aspect=None))
    assert (r0 > 3.5).any() and (r0 < 1 / 3.5).any() and r0.max() > 7 and r0.min() < 1 / 7
    r, tol = box_ratios(sample_boxes('rec', 2000, 96, 0.1, generator=gen(3)))
    assert (r.log().abs() <= math.log(3) + tol).all()
    assert (r <= 3.2).all() and (r >= 1 / 3.2).all()
    r, tol = box_ratios(sample_boxes('rec', 500, 96, 0.1, generator=gen(3), max_aspect=1))
    assert (r.log().abs() <= tol).all()                                 # max_aspect=1: squares up to rounding


@pytest.mark.parametrize('max_aspect', [3, 1.5, None])
def test_max_aspect_deterministic_and_same_draws(max_aspect):
    a = sample_masks('rec', 16, 32, 0.2, generator=gen(8), max_aspect=max_aspect)
    b = sample_masks('rec', 16, 32, 0.2, generator=gen(8), max_aspect=max_aspect)
    assert torch.equal(a, b)
    assert not torch.equal(a, sample_masks('rec', 16, 32, 0.2, generator=gen(9), max_aspect=max_aspect))
    g = gen(8)                                                          # the same number of draws for any cap
    sample_boxes('rec', 16, 32, 0.2, generator=g, max_aspect=max_aspect)
    g0 = gen(8)
    sample_boxes('rec', 16, 32, 0.2, generator=g0, max_aspect=None)
    assert torch.equal(torch.rand(4, generator=g), torch.rand(4, generator=g0))


def test_max_aspect_changes_rec_and_random_only():
    for kind in MASK_KINDS:
        a = sample_boxes(kind, 64, 96, 0.1, generator=gen(5), max_aspect=None)
        b = sample_boxes(kind, 64, 96, 0.1, generator=gen(5))
        assert torch.equal(a, b) != (kind in ('random', 'rec')), kind


@pytest.mark.parametrize('bad', [0.5, 0, -3, 0.999, float('nan'), -math.inf, 'x', '3', True, False, [3], (3,),
                                 torch.tensor(3.0)])
def test_bad_max_aspect(bad):
    for kind in ('rec', 'random', 'center'):                           # checked for every kind
        with pytest.raises(ValueError, match=r'max_aspect .*None or a number >= 1'):
            sample_masks(kind, 2, 32, 0.1, max_aspect=bad)
        with pytest.raises(ValueError, match='max_aspect'):
            sample_boxes(kind, 2, 32, 0.1, max_aspect=bad)
    with pytest.raises(ValueError, match='max_aspect'):
        _coverage(32, 0.1, max_aspect=bad)


def test_random_box_same_in_all_channels_rec_independent():
    B = sample_boxes('random', 100, 32, 0.2, generator=gen())
    assert torch.equal(B[:, 0], B[:, 1]) and torch.equal(B[:, 0], B[:, 2])
    R = sample_boxes('rec', 100, 32, 0.2, generator=gen())
    assert (R[:, 0] != R[:, 1]).any(-1).float().mean() > 0.95


@pytest.mark.parametrize('k', [1, 2])
@pytest.mark.parametrize('size', STAT_SIZES)
def test_colorization_channel_counts(k, size):
    H, W = hw(size)
    M, B = sample_masks(f'color{k}', 3000, size, generator=gen(), return_boxes=True)
    per_channel = M.mean((2, 3))                                           # each channel all 0 or all 1
    assert set(per_channel.unique().tolist()) == {0.0, 1.0}
    missing = per_channel == 0
    assert (missing.sum(1) == k).all()
    assert ((missing.float().mean(0) - k / 3).abs() < 0.04).all()         # every channel equally likely
    assert torch.equal(B[missing], torch.zeros(int(missing.sum()), 4, dtype=torch.long))
    assert (B[~missing] == torch.tensor([0, 0, H, W])).all()
    assert torch.equal((M.sum(1) == 0).float().mean(), torch.tensor(0.0))  # no pixel dropped entirely


def test_center_hole():
    M, B = sample_masks('center', 2, 32, return_boxes=True)
    assert B[0, 0].tolist() == [8, 8, 16, 16]
    assert (M[:, :, 8:24, 8:24] == 0).all() and M.sum().item() == 2 * 3 * (32 * 32 - 16 * 16)
    M = sample_masks('center', 1, 128, center_size=32)
    assert (M[0, :, 48:80, 48:80] == 0).all() and M[0].sum().item() == 3 * (128 * 128 - 32 * 32)
    B = sample_boxes('center', 1, (24, 40), center_size=(6, 10))
    assert B[0, 0].tolist() == [9, 15, 6, 10]
    assert sample_boxes('center', 1, (24, 40))[0, 0].tolist() == [6, 14, 12, 12]   # square, side min(H, W) // 2


# ---------------------------------------------------------------- helpers

def test_boxes_to_masks_broadcasting_and_invert():
    boxes = torch.tensor([[[1, 2, 2, 3], [0, 0, 4, 6], [0, 0, 0, 0]]])
    M = boxes_to_masks(boxes, (4, 6))
    assert M.shape == (1, 3, 4, 6)
    assert M[0, 0].sum() == 6 and (M[0, 0, 1:3, 2:5] == 1).all()
    assert M[0, 1].sum() == 24 and M[0, 2].sum() == 0
    assert torch.equal(boxes_to_masks(boxes, (4, 6), invert=True), 1 - M)
    big = boxes_to_masks(sample_boxes('rec', 5, 8, 0.3, generator=gen()), 8)
    ref = torch.zeros_like(big)
    for i, b in enumerate(sample_boxes('rec', 5, 8, 0.3, generator=gen())):
        for c, (t, l, h, w) in enumerate(b.tolist()):
            ref[i, c, t:t + h, l:l + w] = 1
    assert torch.equal(big, ref)


def test_normalize_boxes():
    nb = normalize_boxes(torch.tensor([[[8, 4, 16, 8], [0, 0, 32, 16], [0, 0, 0, 0]]]), (32, 16))
    assert nb.dtype == torch.float32 and nb.shape == (1, 3, 4)
    assert torch.allclose(nb[0], torch.tensor([[0.25, 0.25, 0.75, 0.75], [0, 0, 1, 1], [0, 0, 0, 0.]]))
    B = sample_boxes('rec', 200, (24, 40), 0.2, generator=gen())
    nb = normalize_boxes(B, (24, 40))
    assert (nb >= 0).all() and (nb <= 1).all() and (nb[..., 2:] > nb[..., :2]).all()
    area = (nb[..., 2] - nb[..., 0]) * (nb[..., 3] - nb[..., 1])
    assert ((area - 0.2).abs() < 0.03).all()


def test_apply_mask():
    Z = torch.rand(4, 3, 16, 16)
    M = sample_masks('rec', 4, 16, 0.3, generator=gen())
    assert torch.equal(apply_mask(Z, M), M * Z)
    O = occlusion_mask('mouth', 16)
    assert torch.equal(apply_mask(Z, O), O[None] * Z)                   # one mask shared by the batch
    assert torch.equal(apply_mask(Z[0], O), O * Z[0])
    for bad in (M[:, :2], M[:2], torch.ones(1, 3, 16, 16), torch.ones(3, 8, 8), torch.ones(16, 16)):
        with pytest.raises(ValueError, match='does not match'):
            apply_mask(Z, bad)


# ---------------------------------------------------------------- occlusions

OCC_SIZES = [96, 97, 32, 128, (64, 80), 8, 2]


def hole(name, size):
    "Rows and columns of the occluded (0) region of occlusion_mask(name, size)."
    M = occlusion_mask(name, size)
    assert torch.equal(M[0], M[1]) and torch.equal(M[0], M[2])
    miss = M[0] == 0
    return miss.any(1).nonzero().flatten(), miss.any(0).nonzero().flatten(), miss


@pytest.mark.parametrize('size', OCC_SIZES)
@pytest.mark.parametrize('name', OCCLUSIONS)
def test_occlusion_is_one_nonempty_rectangle(name, size):
    H, W = hw(size)
    M = occlusion_mask(name, size)
    assert M.shape == (3, H, W) and M.dtype == torch.float32
    rows, cols, miss = hole(name, size)
    assert len(rows) > 0 and 0 < miss.sum() < H * W
    assert miss.sum() == len(rows) * len(cols)                          # a full rectangle
    assert (rows.diff() == 1).all() and (cols.diff() == 1).all()


@pytest.mark.parametrize('size', OCC_SIZES)
def test_occlusion_left_right_convention(size):
    "right = the subject's right, which is on the image's LEFT (small x)."
    H, W = hw(size)
    _, rc, _ = hole('right_half', size); _, lc, _ = hole('left_half', size)
    assert rc.tolist() == list(range(W // 2)) and lc.tolist() == list(range(W // 2, W))
    total = (1 - occlusion_mask('right_half', size)) + (1 - occlusion_mask('left_half', size))
    assert torch.equal(total, torch.ones(3, H, W))                     # the halves partition the image
    if W >= 8:
        _, re, _ = hole('right_eye', size); _, le, _ = hole('left_eye', size)
        assert re.double().mean() < W / 2 < le.double().mean()
        assert re.max() < le.min()                                      # the eye boxes do not overlap
    assert torch.equal(occlusion_mask('left_eye', size), occlusion_mask('right_eye', size).flip(-1))


@pytest.mark.parametrize('size', [s for s in OCC_SIZES if s != 2])
def test_occlusion_face_layout(size):
    H, W = hw(size)
    er, ec, e = hole('both_eyes', size)
    mr, mc, m = hole('mouth', size)
    assert mr.min() > er.max()                                          # mouth below the eyes
    assert er.min() > H * 0.3 and mr.max() < H                          # eyes around mid-height, mouth low
    assert abs((ec.double().mean() + 0.5) - W / 2) <= 0.5 and abs((mc.double().mean() + 0.5) - W / 2) <= 0.5
    for eye in ('right_eye', 'left_eye'):
        assert (hole(eye, size)[2] <= e).all()                          # both_eyes covers each eye box
    assert torch.equal(occlusion_mask('mouth', size), occlusion_mask('mouth', size).flip(-1))
    assert torch.equal(occlusion_mask('both_eyes', size), occlusion_mask('both_eyes', size).flip(-1))


def test_occlusion_positions_match_documented_fractions():
    "At 128 px, the boxes sit where OCCLUSION_BOXES says (eyes at 0.516 H, mouth at 0.836 H, to the pixel)."
    for name in ('right_eye', 'left_eye', 'both_eyes', 'mouth'):
        y0, x0, y1, x1 = OCCLUSION_BOXES[name]
        rows, cols, _ = hole(name, 128)
        assert abs(rows.min() - y0 * 128) <= 1 and abs(rows.max() + 1 - y1 * 128) <= 1
        assert abs(cols.min() - x0 * 128) <= 1 and abs(cols.max() + 1 - x1 * 128) <= 1
    rows, _, _ = hole('right_eye', 128)
    assert abs((rows.double().mean() + 0.5) / 128 - (111 - 45) / 128) < 0.01
    rows, _, _ = hole('mouth', 128)
    assert abs((rows.double().mean() + 0.5) / 128 - (152 - 45) / 128) < 0.01


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize('kwargs, match', [
    (dict(kind='blob'), "'blob'.*'inpaint'"),
    (dict(kind=None), 'None'),
    (dict(S=0), r'\(0, 1\).*got 0'),
    (dict(S=1), r'\(0, 1\).*got 1'),
    (dict(S=1.5), 'got 1.5'),
    (dict(S=-0.2), 'got -0.2'),
    (dict(S=float('nan')), 'got nan'),
    (dict(S='0.1'), "got '0.1'"),
    (dict(S=True), 'got True'),
    (dict(n=0), 'n .*got 0'),
    (dict(n=-3), 'got -3'),
    (dict(n=2.0), 'got 2.0'),
    (dict(size=1), 'at least 2.*got 1'),
    (dict(size=0), 'got 0'),
    (dict(size=-32), 'got -32'),
    (dict(size=(32, 1)), r'got \(32, 1\)'),
    (dict(size=32.0), 'got 32.0'),
    (dict(size=(32, 32.5)), r'got \(32, 32.5\)'),
    (dict(size=(32,)), r'got \(32,\)'),
    (dict(size=(32, 32, 3)), r'got \(32, 32, 3\)'),
    (dict(size='32'), "got '32'"),
    (dict(size=True), 'got True'),
])
def test_bad_input_sample_masks(kwargs, match):
    args = dict(kind='rec', n=2, size=32, S=0.1) | kwargs
    with pytest.raises(ValueError, match=match):
        sample_masks(args.pop('kind'), args.pop('n'), args.pop('size'), args.pop('S'))
    args = dict(kind='rec', n=2, size=32, S=0.1) | kwargs
    with pytest.raises(ValueError, match=match):
        sample_boxes(args.pop('kind'), args.pop('n'), args.pop('size'), args.pop('S'))


@pytest.mark.parametrize('kind', MASK_KINDS)
def test_bad_S_rejected_for_every_kind(kind):
    for S in (0, 1, 1.5, float('nan')):
        with pytest.raises(ValueError, match='S'):
            sample_masks(kind, 2, 32, S)


@pytest.mark.parametrize('center_size', [0, 33, (8, 40), 8.0, 'x', (8,)])
def test_bad_center_size(center_size):
    with pytest.raises(ValueError, match='center_size'):
        sample_masks('center', 2, 32, center_size=center_size)


def test_bad_occlusion_and_helpers():
    with pytest.raises(ValueError, match="'nose'.*'right_half'"):
        occlusion_mask('nose', 96)
    with pytest.raises(ValueError, match='at least 2'):
        occlusion_mask('mouth', 1)
    with pytest.raises(ValueError, match=r'got 96\.0'):
        occlusion_mask('mouth', 96.0)
    with pytest.raises(ValueError, match=r'shape \(n, C, 4\)'):
        boxes_to_masks(torch.zeros(2, 4, dtype=torch.long), 32)
    with pytest.raises(ValueError, match=r'shape \(n, C, 4\)'):
        normalize_boxes(torch.zeros(2, 3, 5), 32)
    with pytest.raises(ValueError, match='at least 2'):
        boxes_to_masks(torch.zeros(2, 3, 4, dtype=torch.long), (0, 32))
    with pytest.raises(ValueError, match='tensors'):
        apply_mask([1.0], torch.ones(1))


def test_square_holes_are_half_the_side_anywhere():
    g = torch.Generator().manual_seed(0)
    M = sample_masks('square', 400, 32, 0.25, generator=g)
    assert (M == 0).flatten(1).sum(1).eq(3 * 16 * 16).all()           # a 16x16 hole in every channel
    rows = (M[:, 0] == 0).any(2).float().argmax(1)                      # first hidden row: spread over 0..16
    assert rows.min() == 0 and rows.max() == 16 and len(rows.unique()) > 12
