"""Probing (Tables 1-2), occlusions (Table 3), the qualitative figures and the HTML report, end to end on tiny runs:
the runs these studies read, each trained a few updates on digits at 16 px, then every table, figure and the report,
checked against numbers computed here."""
import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from mde.data import ImageDataset, load_dataset
from mde.evaluation import evaluate, parse_scenario, test_masks
from mde.figures import figures_study
from mde.masks import OCCLUSIONS, occlusion_mask, sample_masks
from mde.occlusion import PAPER_TABLE3, occlusion_study
from mde.params import load_params, load_yaml, side_section
from mde.probing import (PAPER_TABLE1, RANDOM, encoder_features, probe_data, probe_model, probe_targets, probing_study,
                         random_model)
from mde.report import build_report, md_to_html
from mde.studies import load_run
from mde.trainer import train

REPO = Path(__file__).resolve().parents[1]
SMALL = {'data': {'img_size': 16, 'eval_images': 16}, 'train': {'steps': 6, 'batch_size': 8, 'ckpt_every': 6,
         'eval_every': 6, 'sample_every': 6, 'log_every': 3, 'progress': False},
         'model': {'widths': [8, 16], 'd_widths': [8, 16], 'convs_per_block': 1, 'fc_dim': 32, 'r_base': 4},
         'losses': {'vgg_weights': 'random'}}


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    "The repository's params.yaml at 16 px, and the runs the probing / occlusion / figures studies read, trained briefly."
    torch.set_num_threads(2)
    tmp = tmp_path_factory.mktemp('i7')
    conf = load_yaml((REPO / 'params.yaml').read_text())
    for k, v in SMALL.items(): conf[k].update(v)
    conf['data']['root'] = str(tmp / 'data')
    conf['studies']['test_images'] = 24
    conf['studies']['probing']['runs'] = ['Col1', 'REC10']          # two of the grid's, to keep it short
    conf['studies']['probing']['probe'] = {'steps': 60, 'batch_size': 16}
    path = tmp / 'params.yaml'
    path.write_text(yaml.safe_dump(conf, sort_keys=False))
    st = side_section('studies', path)
    names = {*st['probing']['runs'], *st['occlusion']['runs'].values(), *st['figures']['runs'].values(),
             *st['figures']['fig1'].values()}
    for name in sorted(names): train(load_params(path, run=name), tmp / 'runs' / name)
    return tmp, path, st


# --- masks and scenarios ----------------------------------------------------------------------------------

def test_square_holes_are_half_the_side_anywhere():
    g = torch.Generator().manual_seed(0)
    M = sample_masks('square', 400, 32, 0.25, generator=g)
    assert (M == 0).flatten(1).sum(1).eq(3 * 16 * 16).all()           # a 16x16 hole in every channel
    rows = (M[:, 0] == 0).any(2).float().argmax(1)                      # first hidden row: spread over 0..16
    assert rows.min() == 0 and rows.max() == 16 and len(rows.unique()) > 12


def test_occlusion_scenarios_are_the_fixed_face_boxes():
    for occ in OCCLUSIONS:
        assert parse_scenario(occ) == (occ, None)
        M = test_masks(occ, 5, 32)
        assert torch.equal(M, occlusion_mask(occ, 32).expand(5, 3, 32, 32))
    with pytest.raises(ValueError, match='aligned'):
        test_masks('mouth', 2, (32, 28))
    with pytest.raises(ValueError, match='at least 16'):
        test_masks('right_eye', 2, 12)


# --- probing ----------------------------------------------------------------------------------------------

def test_probe_targets_say_what_is_missing(tmp_path):
    imgs = torch.zeros(4, 3, 16, 16, dtype=torch.uint8)
    no = ImageDataset(imgs, torch.full((4,), -1), {'attrs': torch.full((4, 40), float('nan'))},
                      {'name': 'celeba', 'split': 'train'})
    with pytest.raises(ValueError, match='no attributes.*no landmarks'):
        probe_targets(no)
    attrs = torch.randint(0, 2, (4, 40)).float()
    some = ImageDataset(imgs, torch.full((4,), -1), {'attrs': attrs}, {'name': 'celeba', 'split': 'train'})
    t, notes = probe_targets(some)
    assert list(t) == ['attributes'] and torch.equal(t['attributes'], attrs) and 'no landmarks' in ' '.join(notes)


def test_the_encoder_stays_frozen_and_random_weights_are_seeded(project):
    tmp, path, st = project
    m = load_run('REC10', path, tmp / 'runs')
    before = {k: v.clone() for k, v in m.net.state_dict().items()}
    data = probe_data(m.params['data'], fit_images=64, test_images=24)
    row = probe_model(m, data, steps=20)
    assert all(torch.equal(before[k], v) for k, v in m.net.state_dict().items())      # BatchNorm statistics included
    assert 0 <= row['class_accuracy'] <= 100
    a, b = random_model(m.params, seed=3), random_model(m.params, seed=3)
    x = data['eval'][0][:4]
    assert torch.equal(encoder_features(a, x), encoder_features(b, x))
    assert not torch.equal(encoder_features(a, x), encoder_features(random_model(m.params, seed=4), x))


@pytest.fixture(scope='module')
def probed(project):
    tmp, path, st = project
    return probing_study(tmp / 'probing', path, tmp / 'runs', progress=False)


def test_probing_study_tables(project, probed):
    tmp, path, st = project
    rows = probed
    assert [r['model'] for r in rows] == [RANDOM, *st['probing']['runs']]
    t1 = list(csv.DictReader(open(tmp / 'probing' / 'table1.csv')))
    assert t1[0]['pretraining'] == 'Random weights' and t1[0]['attributes (paper)'] == str(PAPER_TABLE1[0][4])
    assert all(r['landmarks (ours, px)'] == 'n/a' for r in t1)               # digits have no landmarks: n/a, not 0
    md = (tmp / 'probing' / 'table1.md').read_text()
    assert 'probed: class' in md and 'not comparable' in md
    t2 = (tmp / 'probing' / 'table2.md').read_text()
    assert '9.17' in t2 and 'ours:' in t2
    prov = json.loads((tmp / 'probing' / 'provenance.json').read_text())
    assert prov['tasks'] == ['class'] and prov['settings']['steps'] == 60 and prov['models']['REC10']['step'] == 6
    assert (tmp / 'probing' / 'fig_probing.png').stat().st_size > 0


@pytest.mark.skipif(not (REPO.parent / 'shared' / 'data' / 'celeba-subset.tar.gz').exists(),
                    reason='needs the CelebA subset in ../shared/data')
def test_probe_data_on_the_shared_celeba_holds_out_attributed_training_faces(tmp_path):
    d = {'name': 'celeba', 'root': str(tmp_path), 'source': str(REPO.parent / 'shared' / 'data'), 'img_size': 32,
         'limit': 400}
    data = probe_data(d, held_out=0.25, test_images=16)
    assert data['tasks'] == ['attributes'] and 'held-out' in data['how']
    assert len(data['eval'][0]) == 100 and len(data['fit'][0]) == 300
    assert not torch.isnan(data['eval'][1]['attributes']).all()


# --- occlusions -------------------------------------------------------------------------------------------

def test_occlusion_study_is_the_evaluation_of_each_model(project):
    tmp, path, st = project
    rows = occlusion_study(tmp / 'occ', path, tmp / 'runs', classifier=tmp / 'none.pt', progress=False, n_show=2)
    t3 = list(csv.DictReader(open(tmp / 'occ' / 'table3.csv')))
    assert [r['occlusion'] for r in t3] == ['Right half', 'Left half', 'Both eyes', 'Right eye', 'Left eye', 'Mouth']
    assert float(t3[2]['pSNR GFC (paper)']) == PAPER_TABLE3['both_eyes']['psnr'][1]
    ds = load_dataset('digits', 'test', root=tmp / 'data', img_size=16, limit=24)
    m = load_run('REC10-alt', path, tmp / 'runs')                     # Table 3's MDE-REC: the full model
    want = evaluate(m, ds.images, ['mouth'], progress=False)[0]
    got = next(r for r in t3 if r['occlusion'] == 'Mouth')
    assert abs(float(got['pSNR MDE-REC']) - want['psnr']) < 1e-3 and abs(float(got['SSIM MDE-REC (box)']) - want['ssim_missing']) < 1e-3
    assert 'geometric stand-ins' in (tmp / 'occ' / 'table3.md').read_text()
    L = json.loads((tmp / 'occ' / 'provenance.json').read_text())['models']['MDE-REC']['losses']
    assert L['perceptual'] > 0 and L['adversarial'] > 0 and L['hns'] > 0 and (L['hns_variant'], L['hns_form']) == ('alt', 'paper')
    md = (tmp / 'occ' / 'table3.md').read_text()
    assert 'MDE-REC = run REC10-alt' in md and 'HnS alt (paper form)' in md and 'MDE-REC-L2 = run REC10' in md
    assert 'baseline = run SQ25' in md and 'completion + reconstruction + adversarial' in md
    assert {r['losses'] for r in csv.DictReader(open(tmp / 'occ' / 'occlusion.csv')) if r['model'] == 'MDE-REC-L2'} == \
        {'completion + reconstruction'}
    assert (tmp / 'occ' / 'fig_occlusions.png').stat().st_size > 0


# --- figures and the report -------------------------------------------------------------------------------

def test_figures_and_the_offline_report(project, probed):
    tmp, path, st = project
    made = figures_study(tmp / 'figs', path, tmp / 'runs', n=3, k=2)
    assert set(made) == {'fig1_ablation.png', 'fig5_completions.png', 'fig6_samples.png'}
    assert made['fig5_completions.png']['MDE-REC'] == {'run': 'REC10-alt', 'step': 6, 'scenario': 'REC@0.1'}
    out = tmp / 'results'
    for src, dst in ((tmp / 'figs', 'figures'), (tmp / 'probing', 'probing')):
        shutil.copytree(src, out / dst)
    page = build_report(out, out / 'report' / 'index.html').read_text()
    assert page.count('data:image/png;base64,') == len(list(out.glob('*/*.png')))
    assert '<script' not in page and not re.search(r'(src|href)="https?:', page)
    assert 'REC10 @ 6' in page and 'test mask seed: 2024' in page
    assert '<th>pretraining</th>' in page and 'probed class labels' in page


def test_md_to_html_escapes_and_keeps_alignment():
    h = md_to_html('### a<b\n\n| x | y |\n|---|---:|\n| <i> | 2 |\n\n- n')
    assert '<h4>a&lt;b</h4>' in h and '&lt;i&gt;' in h and 'text-align:right">2<' in h and '<li>n</li>' in h
