"""Tests of mde.grid_ablation: the Fig. 7 grid study's tables, figure and provenance, the note under its tables, and
the loss balance rows of the Fig. 8 ablation; on untrained smoke-size models, without training."""
import json

import matplotlib
import pytest
from helpers import runs_file, untrained_runs

matplotlib.use('Agg')

from mde.grid_ablation import _models_note, balance_rows, grid_study  # noqa: E402
from mde.params import SMOKE, PAPER_WEIGHTS  # noqa: E402

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
    tmp = tmp_path_factory.mktemp('grid_ablation')
    path = runs_file(tmp, RUNS, STUDIES)
    over = {**SMOKE, 'data.root': str(tmp / 'data')}
    untrained_runs(path, over, tmp / 'runs')
    return tmp, path, over


def test_grid_study_writes_its_tables_figure_and_provenance(project):
    tmp, path, over = project
    rows = grid_study(tmp / 'grid', path, tmp / 'runs', classifier=tmp / 'none.pt', device='cpu', progress=False,
                      overrides=over)
    assert [r['model'] for r in rows] == ['RE25'] * 2 + ['REC10'] * 2 + ['real images'] * 2 + ['mean-colour fill'] * 2
    assert {'grid.csv', 'grid.md', 'grid_psnr.csv', 'grid_psnr.md', 'fig7_grid.png', 'provenance.json'} \
        <= {f.name for f in (tmp / 'grid').iterdir()}
    md = (tmp / 'grid' / 'grid_psnr.md').read_text()
    assert 'train \\ test' in md and 'RE@0.25' in md and 'REC@0.1' in md and 'no in-domain classifier' in md
    prov = json.loads((tmp / 'grid' / 'provenance.json').read_text())
    assert set(prov['models']) == {'RE25', 'REC10'} and prov['protocol']['test_seed'] == 7
    assert prov['protocol']['images']['n'] == 8


def test_models_note_names_the_losses_and_the_updates():
    l2 = {'losses': {'completion': 1, 'reconstruction': 1, 'perceptual': 0, 'adversarial': 0, 'hns': 0}, 'step': 400}
    assert _models_note({'a': l2, 'b': {**l2, 'step': 200}}) == \
        'models: trained with completion + reconstruction (L2) only, 200, 400 updates (the paper does not say which losses its grid used)'
    assert 'see provenance.json, 400 updates' in _models_note({'a': l2, 'b': {**l2, 'losses': {'hns': 10}}})


def _balance(root, name, start, end):
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / 'loss_balance.json').write_text(json.dumps({'start': start, 'end': end}))


def test_balance_rows_relate_each_term_to_the_completion_loss(project, tmp_path):
    tmp, path, over = project
    _balance(tmp_path, 'REC10-alt', {'completion': {'weight': 1.0, 'value': 0.2, 'grad_norm': 2.0},
                                     'hns': {'weight': 1.0, 'value': 0.7, 'grad_norm': 0.5}},
             {'completion': {'weight': 1.0, 'value': 0.1, 'grad_norm': 1.0}})
    _balance(tmp_path, 'REC10-coord', {'completion': {'weight': 1.0, 'value': 0.2, 'grad_norm': 4.0},
                                       'hns': {'weight': 0.05, 'value': 0.1, 'grad_norm': 1.0}}, {})
    rows = balance_rows({'e': 'REC10-alt', 'c': 'REC10-coord'}, tmp_path, path)
    assert [(r['model'], r['term']) for r in rows] == [('e', 'completion'), ('e', 'hns'), ('c', 'completion'), ('c', 'hns')]
    e_hns, c_hns = rows[1], rows[3]
    assert e_hns['paper weight'] == PAPER_WEIGHTS['hns'] and e_hns['value end'] is None and e_hns['grad end'] is None
    assert e_hns['grad start / completion'] == 0.25 and e_hns['paper grad start / completion'] == pytest.approx(2.5)
    assert c_hns['paper weight'] == PAPER_WEIGHTS['hns_coord']                 # the coord variant's own paper weight
    assert c_hns['paper grad start / completion'] == pytest.approx(1.0 * 0.1 / 0.05 / 4.0)
    assert rows[0]['value start'] == 0.2 and rows[0]['value end'] == 0.1 and rows[0]['grad start / completion'] == 1.0
    with pytest.raises(FileNotFoundError, match=r'loss_balance.json is missing: re-run `dvc repro train@REC10`'):
        balance_rows({'a': 'REC10'}, tmp_path, path)
