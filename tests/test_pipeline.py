"""Checks of what `dvc repro` produced (CI runs `dvc repro` before the tests; these skip, saying so, in a checkout
where the pipeline has not been run): every named run trained and learned, the studies wrote their tables and
figures, and the pipeline is up to date afterwards (re-running it would change nothing)."""
import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mde.params import run_names, side_section

REPO = Path(__file__).resolve().parents[1]
RUNS = run_names(REPO / 'params.yaml')
ran = pytest.mark.skipif(not (REPO / 'outputs' / 'grid' / 'grid.csv').exists(),
                         reason='the pipeline has not been run in this checkout (`dvc repro` makes outputs/)')


@ran
@pytest.mark.parametrize('run', RUNS)
def test_every_run_learned(run):
    m = json.loads((REPO / 'outputs' / 'runs' / run / 'dvclive' / 'metrics.json').read_text())
    assert m['eval']['completion'] < 0.75 * m['initial']['completion'], m
    assert m['eval']['psnr_missing'] > m['initial']['psnr_missing'] + 1.5, m


@ran
def test_grid_and_ablation_outputs():
    studies = side_section('studies', REPO / 'params.yaml')
    for folder, files in {'grid': ['grid.csv', 'grid.md', 'grid_psnr.md', 'fig7_grid.png', 'provenance.json'],
                          'ablation': ['ablation.csv', 'ablation.md', 'loss_balance.md', 'fig8_ablation.png',
                                       'provenance.json']}.items():
        for f in files: assert (REPO / 'outputs' / folder / f).stat().st_size > 0, f'{folder}/{f}'
    rows = list(csv.DictReader(open(REPO / 'outputs' / 'grid' / 'grid.csv')))
    models = {r['model'] for r in rows}
    assert set(studies['grid']['runs']) | {'real images', 'mean-colour fill'} == models
    real = [float(r['psnr']) for r in rows if r['model'] == 'real images']
    assert real and all(p == 100.0 for p in real)
    # trained models beat the mean-colour fill on their own task (pSNR of the missing region)
    own = {'REC10': 'REC@0.1', 'RE25': 'RE@0.25', 'I': 'I@0.25', 'Col1': 'Col1'}
    fill = {r['scenario']: float(r['psnr_missing']) for r in rows if r['model'] == 'mean-colour fill'}
    for model, sc in own.items():
        got = [float(r['psnr_missing']) for r in rows if r['model'] == model and r['scenario'] == sc]
        assert got and got[0] > fill[sc], (model, sc, got, fill[sc])
    prov = json.loads((REPO / 'outputs' / 'grid' / 'provenance.json').read_text())
    assert prov['protocol']['test_seed'] == studies['test_seed'] and prov['scorer']


@ran
@pytest.mark.skipif(shutil.which('dvc') is None, reason='dvc is not installed')
def test_pipeline_is_up_to_date_after_repro():
    r = subprocess.run(['dvc', 'status', '--json'], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    changed = {k: v for k, v in json.loads(r.stdout or '{}').items() if k != 'data.dvc'}   # data/raw: no remote here
    assert changed == {}, changed
