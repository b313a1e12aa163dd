"""Tests of mde.studies: the `studies:` section read and checked (studies_config), the run models loaded and checked
against their parameters (load_run), the test data, a study's rows and provenance, and the losses in words
(describe_losses); on untrained smoke-size models, without training."""
import json
from pathlib import Path

import matplotlib
import pytest
from helpers import runs_file, untrained_runs

matplotlib.use('Agg')

from mde.params import SMOKE  # noqa: E402
from mde.studies import (data_split, describe_losses, load_run, make_scorer, run_dir, score_runs,  # noqa: E402
                         studies_config, study_provenance)
from mde.studies import test_set as the_test_set  # noqa: E402  (not a test: pytest collects test_*)

REPO = Path(__file__).resolve().parents[1]
RUNS = {'RE25': {'mask': 'random', 'S': 0.25}, 'REC10': {'mask': 'rec', 'S': 0.1},
        'REC10-alt': {'mask': 'rec', 'S': 0.1, 'losses': {'adversarial': 0.01, 'hns': 10.0, 'hns_variant': 'alt'}},
        'REC10-coord': {'mask': 'rec', 'S': 0.1, 'losses': {'hns': 0.1, 'hns_variant': 'coord'}}}
STUDIES = {'test_seed': 7, 'test_images': 8,
           'grid': {'runs': ['RE25', 'REC10'], 'tests': ['re@.25', 'REC @ 0.1']},
           'ablation': {'runs': {'a': 'REC10', 'e': 'REC10-alt'}, 'tests': ['REC@0.1']},
           'figures': {'runs': {'MDE-REC': 'REC10'}}}


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    "A params file with four runs and three studies, each run's model saved untrained, at 16 px on digits."
    tmp = tmp_path_factory.mktemp('studies')
    path = runs_file(tmp, RUNS, STUDIES)
    over = {**SMOKE, 'data.root': str(tmp / 'data')}
    untrained_runs(path, over, tmp / 'runs')
    return tmp, path, over


def test_studies_config_reads_and_normalises_the_section(project):
    tmp, path, over = project
    cfg = studies_config(path)
    assert (cfg['test_seed'], cfg['test_images']) == (7, 8)
    assert cfg['grid']['runs'] == {'RE25': 'RE25', 'REC10': 'REC10'}            # a list: each run its own label
    assert cfg['grid']['tests'] == ['RE@0.25', 'REC@0.1']                        # canonical scenario names
    assert cfg['ablation']['runs'] == {'a': 'REC10', 'e': 'REC10-alt'} and cfg['figures']['tests'] == []


def test_studies_config_defaults(tmp_path):
    cfg = studies_config(runs_file(tmp_path, RUNS, {'grid': {'runs': ['RE25'], 'tests': ['Col1']}}))
    assert (cfg['test_seed'], cfg['test_images'], cfg['grid']['tests']) == (2024, None, ['Col1'])


def test_the_repository_studies_name_its_runs():
    cfg = studies_config(REPO / 'params.yaml')
    assert cfg['ablation']['runs']['a'] == 'REC10' and 'REC@0.1' in cfg['grid']['tests']
    assert {'grid', 'ablation', 'probing', 'occlusion', 'figures', 'ce_report'} <= set(cfg)


@pytest.mark.parametrize('change, words', [
    ({'grid': {'runs': ['RE25', 'nope'], 'tests': ['Col1']}}, r"names unknown run\(s\) \['nope'\]"),
    ({'grid': {'runs': ['RE25']}}, 'studies.grid.tests is missing'),
    ({'grid': {'runs': ['RE25'], 'tests': ['XX@0.2']}}, "unknown test scenario 'XX@0.2'"),
    ({'grid': {'runs': ['RE25'], 'tests': ['RE@1.5']}}, 'bad masking ratio'),
    ({'test_seed': -1}, 'studies.test_seed'), ({'test_images': 0}, 'studies.test_images'),
    ({'grid': ['RE25']}, 'studies.grid must be a mapping'),
])
def test_a_bad_studies_section_is_refused(tmp_path, change, words):
    with pytest.raises(ValueError, match=words):
        studies_config(runs_file(tmp_path, RUNS, {**STUDIES, **change}))


def test_load_run_returns_the_model_of_the_run(project):
    tmp, path, over = project
    m = load_run('REC10', path, tmp / 'runs', overrides=over)
    assert (m.name, m.step, m.params['mask'], m.params['S'], m.img_size) == ('REC10', 0, 'rec', 0.1, 16)
    assert run_dir('REC10', tmp / 'runs') == tmp / 'runs' / 'REC10'


def test_load_run_refuses_a_stale_or_missing_or_foreign_model(project, tmp_path):
    tmp, path, over = project
    with pytest.raises(ValueError, match=r"was not trained by run 'REC10' with its current parameters \(differs in \['S'\]\)"
                                         r".*dvc repro train@REC10"):
        load_run('REC10', path, tmp / 'runs', overrides={**over, 'S': 0.2})
    with pytest.raises(FileNotFoundError, match=r"the model of run 'RE25' is missing .*dvc repro train@RE25"):
        load_run('RE25', path, tmp_path / 'nowhere', overrides=over)
    (tmp_path / 'RE25').mkdir()                                    # the model of another run under RE25's name
    (tmp_path / 'RE25' / 'model.pt').write_bytes((tmp / 'runs' / 'REC10' / 'model.pt').read_bytes())
    with pytest.raises(ValueError, match="not trained by run 'RE25'"):
        load_run('RE25', path, tmp_path, overrides=over)


def test_the_test_data_is_the_configured_split_and_size(project):
    tmp, path, over = project
    ds = the_test_set(path, 5, over)
    assert tuple(ds.images.shape) == (5, 3, 16, 16) and ds.info['split'] == 'test' and ds.info['name'] == 'digits'
    d = data_split({'name': 'digits', 'root': str(tmp / 'look'), 'img_size': 8}, 'test', 3, cache=False)
    assert tuple(d.images.shape) == (3, 3, 8, 8) and not (tmp / 'look' / 'cache').exists()   # a look writes no cache


def test_make_scorer_without_a_classifier_says_why(tmp_path):
    import torch
    scorer, why = make_scorer(torch.zeros(2, 3, 16, 16, dtype=torch.uint8), tmp_path / 'clf.pt')
    assert scorer is None and 'no in-domain classifier at' in why and 'dvc repro classifier' in why


def test_score_runs_and_their_provenance(project):
    tmp, path, over = project
    images = the_test_set(path, 4, over).images
    (tmp / 'runs' / 'REC10' / 'run.json').write_text(json.dumps({'perceptual_vgg': 'random (seed 0)'}))
    try:
        rows, models = score_runs({'L2': 'REC10', 'full': 'REC10-alt'}, images, ['REC@0.1'], 7, path=path,
                                  root=tmp / 'runs', progress=False, overrides=over)
        prov = study_provenance(path, images, 7, ['REC@0.1'], models, 'no scorer', extra={'study': 'x'})
    finally:
        (tmp / 'runs' / 'REC10' / 'run.json').unlink()
    assert [r['model'] for r in rows] == ['L2', 'full', 'real images', 'mean-colour fill']
    assert [r.get('run') for r in rows] == ['REC10', 'REC10-alt', None, None]
    assert all(r['scenario'] == 'REC@0.1' and 'psnr' in r for r in rows)
    assert models['full']['losses']['hns'] == 10.0 and 'vgg_weights' not in models['full']['losses']
    assert models['L2'] == {**models['L2'], 'run': 'REC10', 'step': 0, 'arch': 'mde', 'mask': 'rec', 'S': 0.1,
                            'file': str(tmp / 'runs' / 'REC10' / 'model.pt')}
    assert prov['params'] == str(path) and prov['models'] == models and prov['scorer'] == 'no scorer'
    assert prov['perceptual_vgg'] == ['random (seed 0)'] and prov['study'] == 'x'
    assert prov['protocol']['test_seed'] == 7 and [s['name'] for s in prov['protocol']['scenarios']] == ['REC@0.1']
    assert {'code', 'git_commit', 'torch_version', 'device'} <= set(prov)


def test_describe_losses():
    assert describe_losses({'completion': 1, 'reconstruction': 1, 'perceptual': 0, 'hns': 0}) == 'completion + reconstruction'
    assert describe_losses({'completion': 1, 'adversarial': .03, 'hns': .5, 'hns_variant': 'alt', 'hns_form': 'bce'}) == \
        'completion + adversarial + HnS alt (bce form)'
    assert describe_losses({'completion': 1, 'hns': 1, 'hns_variant': 'coord'}) == 'completion + HnS coord'
    assert describe_losses({'hns': 1}) == 'HnS alt (paper form)' and describe_losses({'perceptual': None}) == 'none'
