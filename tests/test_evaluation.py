"""Tests for mde.evaluation: protocol test masks, per-image score rules, evaluate on stand-in models, sanity rows,
the protocol record."""
import json
import math
import subprocess
import sys

import pytest
import torch

import mde.evaluation as ev  # (not `from ... import test_masks`: pytest would see a test function)
from mde.masks import OCCLUSIONS, occlusion_mask, sample_masks
from mde.scenarios import FIG7_SCENARIOS, parse_scenario

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    "Tiny tensors: one thread is as fast, and far faster when other jobs share the cores. Restored afterwards."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def smooth_images(n=24, size=16, seed=0):
    "uint8 (n, 3, size, size) smooth random colour images (upsampled noise), in place of a data set."
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode='bilinear', align_corners=False)
    return (x * 255).round().to(torch.uint8)


class StandIn:
    "The duck type of mde.inference.load_model's result."
    def __init__(self, fill, name='stand-in', img_size=16, arch='mde', step=7):
        self.fill, self.name, self.img_size, self.arch, self.step = fill, name, img_size, arch, step
        self.seen = []

    def complete(self, Z, M):
        self.seen.append((Z.clone(), M.clone()))
        return self.fill(Z, M)


def perfect(targets):
    "Returns the true images, batch after batch in order (the model itself only gets M * Z)."
    T, state = targets.float() / 255, {'i': 0}

    def fill(Z, M):
        i = state['i']
        state['i'] = (i + len(Z)) % len(T)
        return T[i:i + len(Z)].to(Z.device)
    return fill


def half(Z, M):
    return torch.where(M.bool(), Z, torch.full_like(Z, 0.5))


IMAGES = smooth_images()


# ---------------------------------------------------------------- test masks

@pytest.mark.parametrize('scenario', FIG7_SCENARIOS + ('CE',))
def test_masks_deterministic_and_independent_of_the_run_rng(scenario):
    torch.manual_seed(0)
    a = ev.test_masks(scenario, 40, 16)
    torch.manual_seed(12345)
    torch.rand(100)                                                   # the training stream moves on ...
    b = ev.test_masks(scenario, 40, 16)                               # ... the test masks do not
    assert torch.equal(a, b)
    assert a.shape == (40, 3, 16, 16) and a.dtype == torch.float32 and a.device.type == 'cpu'
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert ((a == 0).flatten(1).sum(1) > 0).all()                     # every test mask hides something


def test_masks_do_not_depend_on_n_or_start():
    full = ev.test_masks('REC@0.1', 600, 16)                          # crosses two block boundaries (256, 512)
    for n in (1, 5, 255, 256, 257, 513):
        assert torch.equal(ev.test_masks('REC@0.1', n, 16), full[:n])
    for start, n in ((0, 600), (250, 10), (256, 256), (100, 450), (599, 1)):
        assert torch.equal(ev.test_masks('REC@0.1', n, 16, start=start), full[start:start + n])


def test_masks_seed_and_scenario_change_the_masks():
    a = ev.test_masks('RE@0.25', 64, 16)
    assert not torch.equal(a, ev.test_masks('RE@0.25', 64, 16, seed=ev.TEST_SEED + 1))
    assert not torch.equal(a, ev.test_masks('RE@0.3', 64, 16))
    assert torch.equal(a, ev.test_masks('random@0.25', 64, 16))       # same canonical name, same masks
    assert torch.equal(ev.test_masks('Col1', 8, 16), ev.test_masks('Col1@0.9', 8, 16))   # S ignored
    assert ev.TEST_SEED == 2024


def test_masks_follow_the_kinds_of_mde_masks():
    # one block drawn by test_masks is exactly sample_masks with the block's generator
    g = torch.Generator().manual_seed(ev._block_seed(ev.TEST_SEED, 'RE@0.25', 0))
    ref = sample_masks('random', ev.MASK_BLOCK, 16, 0.25, generator=g)
    assert torch.equal(ev.test_masks('RE@0.25', 30, 16), ref[:30])
    assert torch.equal(ev.test_masks('CE', 4, 32), sample_masks('center', 4, 32))
    assert torch.equal(ev.test_masks('I@0.25', 4, 32), ev.test_masks('CE', 4, 32))
    assert torch.equal(ev.test_masks('I@0.2', 3, 20), 1 - ev.test_masks('RI@0.2', 3, 20))
    col2 = ev.test_masks('Col2', 50, 8)
    assert torch.equal(col2.amax((2, 3)).sum(1), torch.ones(50))     # exactly one channel kept, whole
    assert ev.test_masks('RE@0.25', 4, (12, 20)).shape == (4, 3, 12, 20)


def test_masks_bad_arguments():
    for kwargs, msg in [(dict(n=0), 'n \\(the number'), (dict(n=2.0), 'n \\(the number'), (dict(start=-1), 'start'),
                        (dict(seed='a'), 'seed'), (dict(seed=True), 'seed'), (dict(size=1), 'at least')]:
        args = dict(scenario='RE@0.25', n=4, size=16) | kwargs
        with pytest.raises(ValueError, match=msg):
            ev.test_masks(**args)
    assert ev.test_masks.__test__ is False


@cuda
def test_masks_identical_on_cuda():
    a = ev.test_masks('REC@0.1', 300, 32)
    b = ev.test_masks('REC@0.1', 300, 32, device='cuda')
    assert b.device.type == 'cuda' and torch.equal(a, b.cpu())


# ---------------------------------------------------------------- per-image scores

def test_scores_perfect_hits_the_cap():
    Z = IMAGES.float() / 255
    M = ev.test_masks('REC@0.1', len(Z), 16)
    s = ev.score_images(Z, Z, M)
    assert set(s) == set(ev.SCORE_KEYS)
    for k in ('psnr', 'psnr_missing'):
        assert s[k].shape == (len(Z),) and s[k].dtype == torch.float32
        assert torch.equal(s[k], torch.full((len(Z),), ev.PSNR_CAP))
    assert torch.allclose(s['ssim'], torch.ones(len(Z)), atol=1e-5)
    assert torch.allclose(s['ssim_missing'], torch.ones(len(Z)), atol=1e-5)
    assert ev.PSNR_CAP == 100.0
    assert torch.equal(ev.score_images(Z, Z, M, cap=60.0)['psnr'], torch.full((len(Z),), 60.0))
    Y = Z.clone()
    Y[0, 0, 0, 0] += 1e-6 if Y[0, 0, 0, 0] < 0.5 else -1e-6           # MSE ~ 1e-12 / 768 < 1e-10: still capped
    assert ev.score_images(Y, Z, torch.zeros_like(Z))['psnr'][0] == ev.PSNR_CAP


def test_scores_regions():
    Z = IMAGES[:8].float() / 255 * 0.8 + 0.1
    M = ev.test_masks('RE@0.25', 8, 16)
    Y = Z + 0.1 * (1 - M)                                             # error 0.1 on every missing element only
    s = ev.score_images(Y, Z, M)
    assert torch.allclose(s['psnr_missing'], torch.full((8,), 20.0), atol=1e-3)
    frac = (1 - M).flatten(1).mean(1)
    assert torch.allclose(s['psnr'], 20 - 10 * torch.log10(frac), atol=1e-3)
    # errors on kept elements change the whole-image pSNR but not the missing-region one
    s2 = ev.score_images(Y - 0.05 * M, Z, M)
    assert torch.allclose(s2['psnr_missing'], s['psnr_missing'], atol=1e-4)
    assert (s2['psnr'] < s['psnr'] - 0.1).all()
    # colorization: only the dropped channels count for psnr_missing
    Mc = ev.test_masks('Col1', 8, 16)
    assert torch.allclose(ev.score_images(Z + 0.1 * (1 - Mc), Z, Mc)['psnr_missing'], torch.full((8,), 20.0), atol=1e-3)


def test_ssim_missing_uses_the_bounding_box():
    Z = IMAGES[:4].float() / 255
    M = ev.test_masks('CE', 4, 16)                                    # hole rows/cols 4..11
    Y = Z.clone()
    Y[..., :2, :] = 1 - Y[..., :2, :]                                 # damage outside the hole's box only
    s = ev.score_images(Y, Z, M)
    assert torch.allclose(s['ssim_missing'], torch.ones(4), atol=1e-5)
    assert (s['ssim'] < 0.99).all()
    Y2 = Z.clone()
    Y2[..., 6:10, 6:10] = 0.5                                         # damage inside the hole
    assert (ev.score_images(Y2, Z, M)['ssim_missing'] < 0.99).all()


def test_scores_errors():
    Z = IMAGES[:4].float() / 255
    M = ev.test_masks('RE@0.25', 4, 16)
    M_none = M.clone()
    M_none[2] = 1
    cases = [((Z, Z, M_none), 'hides nothing in image\\(s\\) \\[2\\]'),
             ((Z[:0], Z[:0], M[:0]), 'n = 0'),
             ((Z, Z, M[:, :2]), 'same 4-D shape'),
             ((Z[0], Z[0], M[0]), 'same 4-D shape'),
             ((Z * 255, Z, M), 'divide by 255'),
             ((Z - 0.5, Z, M), r'\[0, 1\]'),
             ((IMAGES[:4], Z, M), 'floating-point'),
             ((Z, Z, M.long()), 'float or bool'),
             ((Z, Z, M * 0.5), 'binary'),
             ((Z.masked_fill(M == 0, float('nan')), Z, M), 'NaN'),
             ((Z, Z.masked_fill(M == 0, float('inf')), M), 'NaN or infinite'),
             ((Z[..., :2, :2], Z[..., :2, :2], M[..., :2, :2]), '3 x 3'),
             ((Z.numpy(), Z, M), 'torch.Tensor')]
    for args, msg in cases:
        with pytest.raises(ValueError, match=msg):
            ev.score_images(*args)
    with pytest.raises(ValueError, match='cap'):
        ev.score_images(Z, Z, M, cap=math.inf)
    assert set(ev.score_images(Z, Z, M.bool())) == set(ev.SCORE_KEYS)     # a bool mask is fine
    assert ev.score_images(Z.double(), Z.half().double(), M)['psnr'].dtype == torch.float32


# ---------------------------------------------------------------- evaluate and sanity rows

def test_evaluate_perfect_model_hits_the_cap():
    rows = ev.evaluate(StandIn(perfect(IMAGES)), IMAGES, ['RE@0.25', 'Col2', 'I@0.25'], batch_size=10, progress=False)
    assert [r['scenario'] for r in rows] == ['RE@0.25', 'Col2', 'I@0.25']
    for r in rows:
        assert r['model'] == 'stand-in' and r['n'] == len(IMAGES) and r['arch'] == 'mde' and r['step'] == 7
        assert r['psnr'] == ev.PSNR_CAP and r['psnr_missing'] == ev.PSNR_CAP and r['n_capped'] == len(IMAGES)
        assert r['psnr_std'] == 0 and abs(r['ssim'] - 1) < 1e-5 and abs(r['ssim_missing'] - 1) < 1e-5
    assert rows[0]['kind'] == 'random' and rows[0]['S'] == 0.25 and rows[1]['S'] is None


def test_evaluate_gives_the_model_only_the_masked_input():
    m = StandIn(half)
    ev.evaluate(m, IMAGES, ['REC@0.1'], batch_size=10, progress=False)
    assert [len(Z) for Z, _ in m.seen] == [10, 10, 4]
    Z = torch.cat([Z for Z, _ in m.seen])
    M = torch.cat([M for _, M in m.seen])
    assert torch.equal(M, ev.test_masks('REC@0.1', len(IMAGES), 16))   # the protocol's masks, in order
    assert torch.equal(Z, M * IMAGES.float() / 255)                     # missing elements zeroed


def test_evaluate_fill_model_equals_the_mean_fill_sanity_row():
    scen = ['I@0.25', 'Col1', 'REC@0.3', 'CE']
    mean = ev.mean_color(IMAGES)
    assert torch.allclose(mean, (IMAGES.double() / 255).mean((0, 2, 3)).float())
    fill = StandIn(lambda Z, M: torch.where(M.bool(), Z, mean.view(1, 3, 1, 1)), name='mine')
    mine = ev.evaluate(fill, IMAGES, scen, batch_size=64, progress=False)
    san = ev.sanity_rows(IMAGES, scen, progress=False)
    assert [r['model'] for r in san] == ['real images'] * 4 + ['mean-colour fill'] * 4
    for a, b in zip(mine, san[4:]):
        assert a['scenario'] == b['scenario']
        for k in ev.SCORE_KEYS + tuple(f'{k}_std' for k in ev.SCORE_KEYS):
            assert a[k] == b[k], k
        assert b['psnr_missing'] < 30 and b['n_capped'] == 0 and b['arch'] is None
    for r in san[:4]:
        assert r['psnr_missing'] == ev.PSNR_CAP and r['n_capped'] == len(IMAGES) and abs(r['ssim'] - 1) < 1e-5


def test_evaluate_batch_size_order_and_input_forms():
    a = ev.evaluate(StandIn(half), IMAGES, ['RE@0.25', 'Col1'], batch_size=64, progress=False)
    b = ev.evaluate(StandIn(half), IMAGES.float() / 255, ['Col1', 'random@0.25'], batch_size=5, progress=False)
    for ra, rb in zip(a, b[::-1]):
        assert list(ra) == list(rb) and ra['scenario'] == rb['scenario']
        for k in ev.SCORE_KEYS:
            assert ra[k] == pytest.approx(rb[k], abs=1e-6)

    class Dataset:                                                    # anything with `.images` (an ImageDataset)
        images = IMAGES
    c = ev.evaluate(StandIn(half), Dataset(), 'RE@0.25', progress=False)
    assert c[0]['psnr'] == pytest.approx(a[0]['psnr'], abs=1e-6)
    # progress bars on: same numbers
    d = ev.evaluate(StandIn(half), IMAGES, ['RE@0.25'], progress=True)
    assert d[0]['psnr'] == pytest.approx(a[0]['psnr'], abs=1e-6)


def test_evaluate_names_and_seed():
    m = StandIn(half, name=None, arch='ce')
    assert ev.evaluate(m, IMAGES, ['CE'], progress=False)[0]['model'] == 'ce'
    assert ev.evaluate(m, IMAGES, ['CE'], progress=False, name='baseline')[0]['model'] == 'baseline'
    r1 = ev.evaluate(StandIn(half), IMAGES, ['REC@0.1'], progress=False)[0]
    r2 = ev.evaluate(StandIn(half), IMAGES, ['REC@0.1'], seed=1, progress=False)[0]
    assert r1['psnr'] != r2['psnr']


def test_evaluate_errors():
    with pytest.raises(ValueError, match='img_size=32'):
        ev.evaluate(StandIn(half, img_size=32), IMAGES, ['CE'], progress=False)
    with pytest.raises(ValueError, match='complete\\(Z, M\\)'):
        ev.evaluate(object(), IMAGES, ['CE'], progress=False)
    with pytest.raises(ValueError, match='N = 0'):
        ev.evaluate(StandIn(half), IMAGES[:0], ['CE'], progress=False)
    with pytest.raises(ValueError, match='square RGB'):
        ev.evaluate(StandIn(half), IMAGES[:, :1], ['CE'], progress=False)
    with pytest.raises(ValueError, match='lie in \\[0, 1\\]'):
        ev.evaluate(StandIn(half), IMAGES.float(), ['CE'], progress=False)
    with pytest.raises(ValueError, match='must return'):
        ev.evaluate(StandIn(lambda Z, M: Z[:, :2]), IMAGES, ['CE'], progress=False)
    with pytest.raises(ValueError, match='NaN'):
        ev.evaluate(StandIn(lambda Z, M: Z / 0), IMAGES, ['CE'], progress=False)
    with pytest.raises(ValueError, match='duplicate'):
        ev.evaluate(StandIn(half), IMAGES, ['RE@0.25', 'random@0.25'], progress=False)
    with pytest.raises(ValueError, match='valid forms'):
        ev.evaluate(StandIn(half), IMAGES, ['RE'], progress=False)
    with pytest.raises(ValueError, match='batch_size'):
        ev.evaluate(StandIn(half), IMAGES, ['CE'], batch_size=0, progress=False)


def test_evaluate_clamps_and_pastes_back():
    # a model that writes garbage on the kept elements and out-of-range values in the hole
    r = ev.evaluate(StandIn(lambda Z, M: torch.where(M.bool(), torch.full_like(Z, 7.), torch.full_like(Z, 2.))),
                    IMAGES, ['CE'], progress=False)[0]
    ref = ev.evaluate(StandIn(lambda Z, M: torch.where(M.bool(), Z, torch.ones_like(Z))), IMAGES, ['CE'],
                      progress=False)[0]
    for k in ev.SCORE_KEYS:
        assert r[k] == ref[k]


def test_scorer_gets_uint8_completions():
    calls = []

    def scorer(fake):
        calls.append(fake)
        return {'fid': torch.tensor(1.5), 'kid': 0.25, 'kid_std': 0.01}
    rows = ev.evaluate(StandIn(perfect(IMAGES)), IMAGES, ['RE@0.25', 'Col1'], batch_size=7, scorer=scorer,
                       progress=False)
    assert len(calls) == 2
    for fake in calls:                                                # the real images, bit for bit
        assert fake.dtype == torch.uint8 and fake.device.type == 'cpu' and torch.equal(fake, IMAGES)
    assert rows[0]['fid'] == 1.5 and isinstance(rows[0]['fid'], float) and rows[1]['kid_std'] == 0.01
    keys = list(rows[0])
    assert keys.index('fid') < keys.index('psnr_std')                  # the scorer's numbers follow the means
    san = ev.sanity_rows(IMAGES, ['Col1'], scorer=scorer, progress=False)
    assert torch.equal(calls[2], IMAGES) and san[0]['kid'] == 0.25
    with pytest.raises(ValueError, match='clashes'):
        ev.evaluate(StandIn(half), IMAGES, ['CE'], scorer=lambda f: {'psnr': 1.0}, progress=False)
    with pytest.raises(ValueError, match='dict'):
        ev.evaluate(StandIn(half), IMAGES, ['CE'], scorer=lambda f: 1.0, progress=False)


@cuda
def test_evaluate_cuda_matches_cpu():
    cpu = ev.evaluate(StandIn(half), IMAGES, ['REC@0.1', 'I@0.25'], progress=False)
    gpu = ev.evaluate(StandIn(half), IMAGES, ['REC@0.1', 'I@0.25'], progress=False, device='cuda')
    for a, b in zip(cpu, gpu):
        for k in ev.SCORE_KEYS:
            assert a[k] == pytest.approx(b[k], abs=1e-4)


# ---------------------------------------------------------------- protocol info

def test_protocol_info():
    info = ev.protocol_info(IMAGES, scenarios=['RE@0.25', 'col1', 'CE'])
    json.dumps(info)
    assert info['test_seed'] == ev.TEST_SEED and info['psnr_cap_db'] == ev.PSNR_CAP
    assert [s['name'] for s in info['scenarios']] == ['RE@0.25', 'Col1', 'CE']
    assert [s['S'] for s in info['scenarios']] == [0.25, None, None]
    assert info['images']['n'] == len(IMAGES)

    class DS:
        info = {'name': 'digits', 'split': 'test', 'n': 297, 'img_size': 32, 'classes': list('0123456789')}
    i2 = ev.protocol_info(DS(), seed=5)
    assert i2['images'] == {'name': 'digits', 'split': 'test', 'img_size': 32, 'n': 297} and i2['test_seed'] == 5
    assert len(i2['scenarios']) == len(FIG7_SCENARIOS)
    assert any('digits/test, 297 test images' in line for line in ev.protocol_notes(i2))
    assert '24 test images' in ev.protocol_notes(ev.protocol_info(IMAGES))[0]
    with pytest.raises(ValueError, match='valid forms'):
        ev.protocol_info(scenarios=['RE'])


def test_module_import_is_light():
    code = "import sys, mde.evaluation; print('matplotlib' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ['False', 'False']


def test_occlusion_scenarios_are_the_fixed_face_boxes():
    for occ in OCCLUSIONS:
        assert parse_scenario(occ) == (occ, None)
        M = ev.test_masks(occ, 5, 32)
        assert torch.equal(M, occlusion_mask(occ, 32).expand(5, 3, 32, 32))
    with pytest.raises(ValueError, match='aligned'):
        ev.test_masks('mouth', 2, (32, 28))
    with pytest.raises(ValueError, match='at least 16'):
        ev.test_masks('right_eye', 2, 12)
