"Thorough checks of mde.metrics: pSNR, SSIM (two backends, independent references) and inception score."
import math, sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mde.metrics as Mx
from mde.metrics import FeatureDistances, distance_backend, frechet_distance, inception_score, kernel_distance, psnr, ssim
from helpers import rec_like_masks


def _imgs(n=3, c=3, size=32, seed=0, smooth=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, size, size, generator=g)
    if smooth: x = F.avg_pool2d(F.interpolate(x, scale_factor=2, mode='bilinear'), 2)
    return x


def _noisy(x, s=0.1, seed=1):
    return (x + s * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)


def _rec_mask(n=3, size=32, seed=0):
    return rec_like_masks(n, size, seed)


# ---------------------------------------------------------------- pSNR
def _psnr_numpy(p, t, m=None, L=1.0):
    p, t = p.numpy().astype(np.float64), t.numpy().astype(np.float64)
    out = []
    for i in range(p.shape[0]):
        e = (p[i] - t[i]) ** 2
        mse = e.mean() if m is None else e[m[i].numpy() < 1].mean()
        out.append(10 * np.log10(L ** 2 / mse))
    return np.array(out)


def test_psnr_matches_numpy():
    t = _imgs(4); p = _noisy(t)
    np.testing.assert_allclose(psnr(p, t).numpy(), _psnr_numpy(p, t), rtol=1e-6)
    M = _rec_mask(4)
    np.testing.assert_allclose(psnr(p, t, mask=M).numpy(), _psnr_numpy(p, t, M), rtol=1e-6)
    assert not np.allclose(_psnr_numpy(p, t, M), _psnr_numpy(p, t))


def test_psnr_known_values():
    t = _imgs(2) * 0.8
    np.testing.assert_allclose(psnr(t + 0.1, t).numpy(), [20, 20], atol=1e-4)
    np.testing.assert_allclose(psnr(t + 0.01, t).numpy(), [40, 40], atol=1e-3)
    np.testing.assert_allclose(psnr(255 * t + 25.5, 255 * t, data_range=255).numpy(), [20, 20], atol=1e-4)
    assert torch.isinf(psnr(t, t)).all() and (psnr(t, t) > 0).all()       # identical -> +inf


def test_psnr_mask_restricts_to_missing_region():
    t = _imgs(2); M = _rec_mask(2)
    assert torch.isinf(psnr(t + 0.2 * M, t, mask=M)).all()                 # error only where kept
    np.testing.assert_allclose(psnr(t + 0.1 * (1 - M), t, mask=M).numpy(), [20, 20], atol=1e-4)


def test_psnr_shape_dtype_device():
    t = _imgs(5).double(); p = _noisy(t)
    out = psnr(p, t)
    assert out.shape == (5,) and out.dtype == torch.float32 and out.device == t.device
    assert torch.allclose(psnr(p.float(), t.float()), out, atol=1e-4)


@pytest.mark.parametrize('fn', [psnr, ssim])
def test_bad_input(fn):
    t = _imgs(2)
    with pytest.raises(ValueError, match=r'target=\(2, 1, 32, 32\)'): fn(t, t[:, :1])
    with pytest.raises(ValueError, match='4-D'): fn(t[0], t[0])
    with pytest.raises(ValueError, match=r'mask=\(2, 1, 32, 32\)'): fn(t, t, mask=torch.ones(2, 1, 32, 32))
    M = torch.zeros_like(t); M[1] = 1                                      # image 1 has nothing missing
    with pytest.raises(ValueError, match=r'no missing pixel.*\[1\]'): fn(t, t, mask=M)
    with pytest.raises(ValueError, match='floating point'): fn((t * 255).long(), (t * 255).long())
    with pytest.raises(ValueError, match='torch.Tensor'): fn(t.numpy(), t)
    with pytest.raises(ValueError, match='data_range'): fn(t, t, data_range=0)


# ---------------------------------------------------------------- SSIM
def _ssim_scipy(p, t, L=1.0, sigma=1.5):
    "Independent reference (what skimage does): scipy Gaussian filter truncated at 3.5 sigma, valid crop."
    ndimage = pytest.importorskip('scipy.ndimage')
    p, t = p.numpy().astype(np.float64), t.numpy().astype(np.float64)
    r = int(3.5 * sigma + 0.5)
    f = lambda a: ndimage.gaussian_filter(a, sigma, truncate=3.5, mode='reflect')
    out = []
    for i in range(p.shape[0]):
        vals = []
        for c in range(p.shape[1]):
            x, y = p[i, c], t[i, c]
            mx, my = f(x), f(y)
            sxx, syy, sxy = f(x * x) - mx ** 2, f(y * y) - my ** 2, f(x * y) - mx * my
            c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
            s = (2 * mx * my + c1) * (2 * sxy + c2) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
            vals.append(s[r:-r, r:-r])
        out.append(np.mean(vals))
    return np.array(out)


@pytest.mark.parametrize('backend', ['torch', 'torchmetrics'])
def test_ssim_identical_is_one(backend):
    t = _imgs(3)
    np.testing.assert_allclose(ssim(t, t, backend=backend).numpy(), 1, atol=1e-6)
    np.testing.assert_allclose(ssim(t, t, mask=_rec_mask(3), backend=backend).numpy(), 1, atol=1e-6)


@pytest.mark.parametrize('backend', ['torch', 'torchmetrics'])
def test_ssim_matches_independent_reference(backend):
    t = _imgs(3); p = _noisy(t, 0.15)
    np.testing.assert_allclose(ssim(p, t, backend=backend).numpy(), _ssim_scipy(p, t), atol=1e-5)
    np.testing.assert_allclose(ssim(255 * p, 255 * t, data_range=255, backend=backend).numpy(),
                               _ssim_scipy(255 * p, 255 * t, L=255), atol=1e-4)


def test_ssim_matches_skimage():
    skm = pytest.importorskip('skimage.metrics', reason='scikit-image is not installed')
    t = _imgs(2); p = _noisy(t, 0.15)
    ref = [skm.structural_similarity(p[i].numpy(), t[i].numpy(), channel_axis=0, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, data_range=1.0) for i in range(2)]
    np.testing.assert_allclose(ssim(p, t).numpy(), ref, atol=1e-5)


def test_ssim_backends_agree():
    t = _imgs(4, size=40, seed=3); p = _noisy(t, 0.2, seed=4)
    M = _rec_mask(4, size=40, seed=5)
    for mask in (None, M):
        a, b = ssim(p, t, mask=mask, backend='torch'), ssim(p, t, mask=mask, backend='torchmetrics')
        assert torch.allclose(a, b, atol=1e-5), (a, b)
    small_t, small_p = t[..., :7, :9], p[..., :7, :9]          # smaller than the 11x11 window
    assert torch.allclose(ssim(small_p, small_t, backend='torch'), ssim(small_p, small_t, backend='torchmetrics'), atol=1e-5)


def test_ssim_monotone_and_symmetric():
    t = _imgs(2)
    vals = [ssim(_noisy(t, s), t) for s in (0.02, 0.1, 0.3)]
    assert (vals[0] > vals[1]).all() and (vals[1] > vals[2]).all() and (vals[0] < 1).all()
    p = _noisy(t, 0.1)
    assert torch.allclose(ssim(p, t), ssim(t, p), atol=1e-6)


def test_ssim_mask_uses_missing_bounding_box_per_image():
    t = _imgs(3, seed=6); p = _noisy(t, 0.2, seed=7)
    M = torch.ones_like(t)
    M[0, :, 4:20, 6:30] = 0                                  # three different holes
    M[1, 1, 10:28, 2:16] = 0                                 # missing in one channel only: box still all channels
    M[2, :, 16:32, 16:32] = 0
    out = ssim(p, t, mask=M)
    boxes = [(4, 20, 6, 30), (10, 28, 2, 16), (16, 32, 16, 32)]
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        ref = ssim(p[i:i + 1, :, y0:y1, x0:x1], t[i:i + 1, :, y0:y1, x0:x1])
        assert torch.allclose(out[i], ref[0], atol=1e-6)
    far = p.clone(); far[0, :, 24:, :] = 0; far[2, :, :8, :] = 1             # outside the boxes
    assert torch.equal(ssim(far, t, mask=M), out)
    grouped = ssim(p[[0, 0, 2]], t[[0, 0, 2]], mask=M[[0, 0, 2]])            # shared boxes are batched
    assert torch.allclose(grouped, out[[0, 0, 2]], atol=1e-6)


def test_ssim_small_box_shrinks_window_thin_box_grows():
    t = _imgs(1, seed=8); p = _noisy(t, 0.2, seed=9)
    M = torch.ones_like(t); M[..., 8:15, 4:28] = 0                           # 7 rows: window 7x7, sigma 1.5*3/5
    exp = Mx._ssim_torch(p[..., 8:15, 4:28], t[..., 8:15, 4:28], 1.5 * 3 / 5, 1.0, 0.01, 0.03)
    assert torch.allclose(ssim(p, t, mask=M, backend='torch'), exp, atol=1e-6)
    assert Mx._window(1.5 * 3 / 5) == 3 and Mx._window(1.5) == 5
    M = torch.ones_like(t); M[..., 10, 4:28] = 0                             # 1 row: grown to rows 9..11
    exp = Mx._ssim_torch(p[..., 9:12, 4:28], t[..., 9:12, 4:28], 1.5 / 5, 1.0, 0.01, 0.03)
    assert torch.allclose(ssim(p, t, mask=M, backend='torch'), exp, atol=1e-6)
    M = torch.ones_like(t); M[..., 0, 0] = 0                                 # corner pixel: grown inside the image
    assert torch.isfinite(ssim(p, t, mask=M)).all()
    with pytest.raises(ValueError, match='at least 3x3'): ssim(t[..., :2, :2], t[..., :2, :2])


def test_ssim_dtypes():
    t = _imgs(2); p = _noisy(t)
    out = ssim(p.double(), t.double())
    assert out.shape == (2,) and out.dtype == torch.float32
    assert torch.allclose(out, ssim(p, t), atol=1e-5)
    assert torch.allclose(ssim(p.half(), t.half()), ssim(p.half().float(), t.half().float()))


def test_ssim_without_torchmetrics(monkeypatch):
    t = _imgs(2); p = _noisy(t)
    ref = ssim(p, t, backend='torch')
    monkeypatch.setitem(sys.modules, 'torchmetrics', None)                  # import torchmetrics -> ImportError
    assert torch.equal(ssim(p, t), ref)                                      # 'auto' falls back to pure torch
    with pytest.raises(ValueError, match='not installed'): ssim(p, t, backend='torchmetrics')


def test_ssim_bad_options():
    t = _imgs(1)
    with pytest.raises(ValueError, match="valid: 'auto', 'torch', 'torchmetrics'"): ssim(t, t, backend='skimage')
    with pytest.raises(ValueError, match='sigma'): ssim(t, t, sigma=0)


# ---------------------------------------------------------------- inception score
def _is_numpy(p, splits):
    "Reference: Salimans et al.'s formula (numpy)."
    p = np.asarray(p, dtype=np.float64); n = len(p); scores = []
    for i in range(splits):
        part = p[i * n // splits:(i + 1) * n // splits]
        py = part.mean(0, keepdims=True)
        with np.errstate(divide='ignore', invalid='ignore'):
            kl = np.where(part > 0, part * (np.log(part) - np.log(py)), 0).sum(1)
        scores.append(np.exp(kl.mean()))
    return np.mean(scores), np.std(scores)


def test_inception_matches_reference():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(103, 7, generator=g), 1)
    probs[5] = torch.eye(7)[2]                                               # exact zeros: 0 log 0 = 0
    for splits in (1, 2, 5, 10):
        m, s = inception_score(probs, splits)
        rm, rs = _is_numpy(probs.numpy(), splits)
        assert math.isclose(m, rm, rel_tol=1e-9) and math.isclose(s, rs, rel_tol=1e-7, abs_tol=1e-12)
        assert isinstance(m, float) and isinstance(s, float)
    assert inception_score(probs, 1)[1] == 0
    assert inception_score(probs.numpy())[0] == pytest.approx(inception_score(probs)[0])   # numpy input


def test_inception_known_values():
    K = 8
    assert inception_score(torch.full((40, K), 1 / K))[0] == pytest.approx(1)
    assert inception_score(torch.eye(K).repeat(4, 1))[0] == pytest.approx(K)
    assert inception_score(torch.eye(K)[[0] * 30])[0] == pytest.approx(1)
    half = torch.eye(K)[[0, 1] * 10]                                         # confident, 2 classes used
    assert inception_score(half)[0] == pytest.approx(2)
    p = torch.softmax(torch.randn(64, K, generator=torch.Generator().manual_seed(1)), 1)
    assert 1 <= inception_score(p)[0] <= K


def test_inception_bad_input():
    p = torch.full((10, 4), 0.25)
    with pytest.raises(ValueError, match=r'2-D.*\(40,\)'): inception_score(p.flatten())
    with pytest.raises(ValueError, match='softmax'): inception_score(torch.randn(10, 4))
    with pytest.raises(ValueError, match='softmax'): inception_score(p * 2)
    with pytest.raises(ValueError, match=r'splits.*\[1, n=10\]'): inception_score(p, splits=0)
    with pytest.raises(ValueError, match='splits'): inception_score(p, splits=11)
    with pytest.raises(ValueError, match='splits'): inception_score(p, splits=2.0)
    with pytest.raises(ValueError, match='non-empty'): inception_score(torch.zeros(0, 4))


def test_attribute_inception_score():
    "multilabel=True: the geometric mean over attributes of the two-class inception scores."
    g = torch.Generator().manual_seed(0)
    p = torch.rand(30, 6, generator=g, dtype=torch.float64)
    per = [inception_score(torch.stack([1 - p[:, a], p[:, a]], 1))[0] for a in range(6)]
    assert math.isclose(inception_score(p, multilabel=True)[0], math.exp(sum(map(math.log, per)) / 6), rel_tol=1e-12)
    assert math.isclose(inception_score(torch.full((10, 40), 0.3, dtype=torch.float64), multilabel=True)[0], 1.0)
    m, s = inception_score(p, splits=3, multilabel=True)
    parts = [inception_score(p[i * 10:(i + 1) * 10], multilabel=True)[0] for i in range(3)]
    assert math.isclose(m, float(np.mean(parts)), rel_tol=1e-12) and math.isclose(s, float(np.std(parts)), rel_tol=1e-9)
    with pytest.raises(ValueError, match=r'splits.*\[1, n=30\]'): inception_score(p, splits=True, multilabel=True)


# ---------------------------------------------------------------- FID / KID

def _feats(n, d, seed, scale=0.25, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g)) * scale + shift


def _kid_numpy(x, y):
    "Unbiased MMD^2 with k = (x.y/d + 1)^3 over all of x and y (m each): an independent reference."
    x, y = x.numpy(), y.numpy()
    m, d = len(x), x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * kxy.mean())


def test_fid_closed_forms():
    A = _feats(300, 12, 0)
    c = A - A.mean(0)
    trace = (c.T @ c / 299).trace().item()
    for backend in ('torch', 'torchmetrics'):
        assert abs(frechet_distance(A, A, backend)) < 1e-8 * trace
        assert math.isclose(frechet_distance(A, A + 0.5, backend), 12 * 0.25, rel_tol=1e-8)   # |shift|^2
        # S2 = 4 S1: Tr(S1 + 4 S1 - 2 (4 S1^2)^(1/2)) = Tr(S1)
        assert math.isclose(frechet_distance(A, 2 * c, backend), trace + (A.mean(0) ** 2).sum().item(), rel_tol=1e-7)


def test_kid_matches_reference():
    x, y = _feats(40, 8, 1), _feats(40, 8, 2, shift=0.3)
    ref = _kid_numpy(x.double(), y.double())
    for backend in ('torch', 'torchmetrics'):                  # subset = everything: the permutation does not matter
        kid, std = kernel_distance(x, y, subsets=3, subset_size=40, backend=backend)
        assert math.isclose(kid, ref, rel_tol=1e-10) and std < 1e-10 * abs(ref)


@pytest.mark.parametrize('n_real,n_fake,d', [(300, 200, 16), (120, 80, 64), (50, 30, 64)])
def test_backends_agree(n_real, n_fake, d):
    "torchmetrics and the pure-torch fallback agree: FID to 1e-10 relative (1e-6 when the covariances are singular), KID to 1e-9."
    A = _feats(n_real, d, 3)
    B = _feats(n_fake, d, 4, scale=0.3, shift=0.1)
    fid_tm, fid_pt = frechet_distance(A, B, 'torchmetrics'), frechet_distance(A, B, 'torch')
    tol = 1e-10 if min(n_real, n_fake) > d else 1e-6          # measured: ~1e-14 and ~1e-8
    assert math.isclose(fid_tm, fid_pt, rel_tol=tol), (fid_tm, fid_pt)
    (k_tm, s_tm), (k_pt, s_pt) = (kernel_distance(A, B, 20, 25, seed=7, backend=b) for b in ('torchmetrics', 'torch'))
    assert math.isclose(k_tm, k_pt, rel_tol=1e-9, abs_tol=1e-12) and math.isclose(s_tm, s_pt, rel_tol=1e-9)


def test_kid_subsets_are_seeded():
    A, B = _feats(200, 8, 5), _feats(150, 8, 6, shift=0.2)
    for backend in ('torch', 'torchmetrics'):
        torch.manual_seed(0); r0 = torch.rand(2)
        torch.manual_seed(0)
        k1 = kernel_distance(A, B, 10, 50, seed=1, backend=backend)
        assert torch.equal(torch.rand(2), r0)                   # the caller's random state is untouched
        assert k1 == kernel_distance(A, B, 10, 50, seed=1, backend=backend)
        assert k1 != kernel_distance(A, B, 10, 50, seed=2, backend=backend)


def test_distance_backend_without_torchmetrics(monkeypatch):
    assert distance_backend() == 'torchmetrics'                 # installed here (a dev requirement)
    monkeypatch.setitem(sys.modules, 'torchmetrics', None)       # `import torchmetrics` now raises ImportError
    assert distance_backend('auto') == 'torch'
    with pytest.raises(ValueError, match='not installed'): distance_backend('torchmetrics')
    A, B = _feats(40, 4, 0), _feats(30, 4, 1, shift=0.2)
    d = FeatureDistances(A, 'auto', kid_subsets=3, kid_subset_size=10)
    assert d.backend == 'torch' and set(d(B)) == {'fid', 'kid', 'kid_std', 'kid_subset_size'}


def test_feature_distances_are_the_one_off_functions():
    A, B = _feats(60, 6, 2), _feats(50, 6, 3, shift=0.1)
    for backend in ('torch', 'torchmetrics'):
        d = FeatureDistances(A, backend, kid_subsets=4, kid_subset_size=30, seed=5)
        r = d(B)
        assert r == d(B) and r['kid_subset_size'] == 30 and d(B[:12])['kid_subset_size'] == 12   # min(size, n_real, n_fake)
        assert r['fid'] == frechet_distance(A, B, backend)
        assert (r['kid'], r['kid_std']) == kernel_distance(A, B, 4, 30, seed=5, backend=backend)
    for bad, what in ((dict(kid_subsets=0), 'kid_subsets'), (dict(kid_subset_size=1), 'kid_subset_size'), (dict(seed=-1), 'seed'),
                      (dict(kid_subsets=True), 'kid_subsets')):
        with pytest.raises(ValueError, match=what): FeatureDistances(A, 'torch', **bad)


def test_distance_input_errors():
    A = _feats(20, 4, 0)
    with pytest.raises(ValueError, match='n >= 2'): frechet_distance(A, A[:1])
    with pytest.raises(ValueError, match='dimensions'): frechet_distance(A, A[:, :3])
    with pytest.raises(ValueError, match='NaN'): frechet_distance(A, A * float('nan'))
    with pytest.raises(ValueError, match='valid'): frechet_distance(A, A, backend='numpy')
