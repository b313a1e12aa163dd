"""The CE report study (mde.ce_report) end to end on tiny runs: the runs of params.yaml's `studies.ce_report`, each
trained a few updates on digits, then every table and figure, checked against numbers computed here."""
import copy
import csv
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from helpers import shrink_ce_runs

from mde.ce_report import REPORT_TABLE1, ROLES, ce_report_study, hole_mse, run_images
from mde.inference import load_model
from mde.params import load_params, load_yaml, side_section
from mde.trainer import train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    "A params.yaml with the repository's CE runs made tiny, and those runs trained (about 30 s on 2 cores)."
    torch.set_num_threads(2)
    tmp = tmp_path_factory.mktemp('ce')
    conf = shrink_ce_runs(load_yaml((REPO / 'params.yaml').read_text()))
    conf['data']['root'] = str(tmp / 'data')
    conf['studies']['test_images'] = 32
    path = tmp / 'params.yaml'
    path.write_text(yaml.safe_dump(conf, sort_keys=False))
    st = side_section('studies', path)['ce_report']
    for name in [*st['runs'].values(), *st['sweep']]:
        train(load_params(path, {'train.progress': False}, run=name), tmp / 'runs' / name)
    return tmp, path, st


@pytest.fixture(scope='module')
def study(project):
    tmp, path, st = project
    return ce_report_study(tmp / 'out', path, tmp / 'runs', progress=False, n_show=4)


def test_ce_runs_use_digits_in_place_of_the_real_data(project):
    tmp, path, st = project
    for role, name in st['runs'].items():
        p = load_params(path, run=name)
        assert p['arch'] == 'ce' and p['data']['name'] == 'digits'
        assert p['data']['stand_in_for'] == ('flowers102' if role == 'large' else 'cifar10')
        real = load_params(path, {'data.source': '/somewhere'}, run=name)
        assert real['data']['name'] == p['data']['stand_in_for'] and 'stand_in_for' not in real['data']
    assert load_params(path, run=st['runs']['one_class'])['data']['classes'] == [9]


def test_table1_is_the_hole_mse_of_each_model_on_its_own_images(project, study):
    tmp, path, st = project
    rows = study['table1']
    assert {(r['role'], r['split']) for r in rows} == {(role, s) for role in st['runs'] for s in ('train', 'test')}
    for r in rows:
        m = load_model(tmp / 'runs' / r['run'] / 'model.pt')
        images, ds = run_images(m, r['split'], 16 if r['split'] == 'train' else None, 32)
        Z = images.float() / 255
        h = m.net.hole_size
        t = (Z.shape[-1] - h) // 2
        M = torch.ones_like(Z); M[..., t:t + h, t:t + h] = 0
        with torch.no_grad(): pred = m.net(M * Z).float()
        want = (pred - Z[..., t:t + h, t:t + h]).pow(2).mean((1, 2, 3)).mean().item()
        assert r['mse'] == pytest.approx(want, rel=1e-4), r
        assert r['report'] == REPORT_TABLE1[r['role']][r['split']]
        assert 'stand-in for' in r['data']
    one = [r for r in rows if r['role'] == 'one_class']
    assert all(r['data'].endswith('class 9') for r in one)
    md = (tmp / 'out' / 'table1.md').read_text()
    assert '0.02493' in md and '0.03596' in md and 'digits (stand-in for cifar10) 32px' in md
    assert 'digits (stand-in for flowers102) 128px' in md
    wide = list(csv.DictReader(open(tmp / 'out' / 'table1.csv')))
    assert [w['MSE'] for w in wide] == ['train', 'test'] and len(wide[0]) == 1 + 2 * len(st['runs'])


def test_section33_gives_the_one_class_test_images_to_both_models(project, study):
    tmp, path, st = project
    s33 = study['section33']
    assert [r['run'] for r in s33] == [st['runs']['all'], st['runs']['one_class']]
    one = load_model(tmp / 'runs' / st['runs']['one_class'] / 'model.pt')
    images, _ = run_images(one, 'test', None, 32)
    for r in s33:
        m = load_model(tmp / 'runs' / r['run'] / 'model.pt')
        assert r['mse'] == pytest.approx(hole_mse(m, images).mean().item(), rel=1e-5)
        assert r['images'] == len(images) and r['test images'].endswith('class 9')
    assert [r['report'] for r in s33] == [0.0356, 0.0360]


def test_loss_curves_sweep_figures_and_provenance(project, study):
    tmp, path, st = project
    out = tmp / 'out'
    curves = list(csv.DictReader(open(out / 'loss_curves.csv')))
    for role, name in st['runs'].items():
        mine = [c for c in curves if c['run'] == name]
        assert {c['curve'] for c in mine} == {'training', 'validation'}
        assert all(math.isfinite(float(c['mse'])) for c in mine)
    sweep = study['sweep']
    assert [r['run'] for r in sweep] == st['sweep']
    for r in sweep:
        p = load_params(path, run=r['run'])
        assert (r['optimizer'], r['lr']) == (p['train']['ce_optimizer'], p['train']['lr_ce'])
    assert (out / 'sweep_mse.md').read_text().count('|') > 6
    for f in ('fig12_13_one_class_by_both.png', 'fig3_6_9_loss_curves.png', 'fig4_5_all.png', 'fig7_8_one_class.png',
              'fig10_11_large.png', 'fig_sweep.png'):
        assert (out / f).stat().st_size > 5000, f
    prov = json.loads((out / 'provenance.json').read_text())
    assert set(prov['models']) == set(st['runs']) | set(st['sweep'])
    assert prov['models']['all']['optimizer'] == 'adam' and prov['models']['all']['lr'] == 1e-3


def test_the_study_refuses_a_wrong_role_and_an_mde_model(project, tmp_path):
    tmp, path, st = project
    conf = yaml.safe_load(path.read_text())
    bad = copy.deepcopy(conf); bad['studies']['ce_report']['runs']['huge'] = 'CE32'
    (tmp_path / 'params.yaml').write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match="unknown role"):
        ce_report_study(tmp_path / 'out', tmp_path / 'params.yaml', tmp / 'runs', progress=False)
    from mde.build import build
    from mde.inference import Completer
    from mde.params import smoke_params
    with pytest.raises(ValueError, match="Context Encoder"):
        hole_mse(Completer.from_setup(build(smoke_params())), torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


def test_sweep_trains_every_sweep_run_in_one_process(tmp_path, monkeypatch):
    "`python -m mde.trainer --sweep` trains each run of `sweep_runs:` into outputs/runs/<name> (DVC: one sweep@<name> stage each)."
    from mde.params import run_names
    from mde.trainer import main
    conf = shrink_ce_runs(load_yaml((REPO / 'params.yaml').read_text()), sweep=2, steps=2)
    conf['data']['root'] = str(tmp_path / 'data')
    (tmp_path / 'params.yaml').write_text(yaml.safe_dump(conf, sort_keys=False))
    (tmp_path / 'profiles').mkdir()
    monkeypatch.chdir(tmp_path)
    names = run_names('params.yaml', 'sweep_runs')
    assert set(names) == set(conf['studies']['ce_report']['sweep']) and not set(names) & set(run_names('params.yaml', 'runs'))
    main(['--sweep', '--no-progress'])
    for name in names:
        m = load_model(tmp_path / 'outputs' / 'runs' / name / 'model.pt')
        assert m.name == name and m.step == 2 and m.params['train']['ce_optimizer'] == load_params(run=name)['train']['ce_optimizer']
    with pytest.raises(SystemExit):
        main(['--sweep', '--run', names[0]])
