"""Checks of what `dvc repro` produced (CI runs `dvc repro` before the tests; these skip, saying so, in a checkout
where the pipeline has not been run): every named run trained and learned, the studies wrote their tables and
figures, and the pipeline is up to date afterwards (re-running it would change nothing)."""
import ast
import csv
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import shrink_ce_runs

from mde.params import run_names, side_section

REPO = Path(__file__).resolve().parents[1]
RUNS = run_names(REPO / 'params.yaml')
SWEEP = side_section('studies', REPO / 'params.yaml')['ce_report']['sweep']   # some optimizers do not learn in 30 updates
ran = pytest.mark.skipif(not (REPO / 'outputs' / 'grid' / 'grid.csv').exists(),
                         reason='the pipeline has not been run in this checkout (`dvc repro` makes outputs/)')


@ran
@pytest.mark.parametrize('run', [r for r in RUNS if r not in SWEEP])
def test_every_run_learned(run):
    m = json.loads((REPO / 'outputs' / 'runs' / run / 'dvclive' / 'metrics.json').read_text())
    assert m['eval']['completion'] < 0.75 * m['initial']['completion'], m
    assert m['eval']['psnr_missing'] > m['initial']['psnr_missing'] + 1.5, m


@ran
def test_ce_report_outputs():
    st = side_section('studies', REPO / 'params.yaml')['ce_report']
    out = REPO / 'outputs' / 'ce_report'
    for f in ('table1.md', 'table1_long.csv', 'section3_3.md', 'loss_curves.csv', 'sweep_mse.md', 'provenance.json',
              'fig3_6_9_loss_curves.png', 'fig4_5_all.png', 'fig7_8_one_class.png', 'fig10_11_large.png',
              'fig12_13_one_class_by_both.png', 'fig_sweep.png'):
        assert (out / f).stat().st_size > 0, f
    rows = list(csv.DictReader(open(out / 'table1_long.csv')))
    assert {(r['run'], r['split']) for r in rows} == {(n, s) for n in st['runs'].values() for s in ('train', 'test')}
    for r in rows:   # each model beats its own untrained start on held-out images
        m = json.loads((REPO / 'outputs' / 'runs' / r['run'] / 'dvclive' / 'metrics.json').read_text())
        if r['split'] == 'test': assert float(r['mse']) < m['initial']['mse_missing'], (r, m['initial'])
    sweep = list(csv.DictReader(open(out / 'sweep.csv')))
    assert [r['run'] for r in sweep] == st['sweep'] and all(math.isfinite(float(r['mse'])) for r in sweep)
    if json.loads((out / 'provenance.json').read_text())['models']['all']['data'].get('stand_in_for'):
        assert 'stand-in for cifar10' in (out / 'table1.md').read_text()


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
def test_probing_occlusion_figures_and_report_outputs():
    st = side_section('studies', REPO / 'params.yaml')
    out = REPO / 'outputs'
    for f in ('probing/table1.md', 'probing/table2.md', 'probing/fig_probing.png', 'probing/provenance.json',
              'occlusion/table3.md', 'occlusion/occlusion.csv', 'occlusion/fig_occlusions.png',
              'figures/fig1_ablation.png', 'figures/fig5_completions.png', 'figures/fig6_samples.png',
              'report/index.html'):
        assert (out / f).stat().st_size > 0, f
    long = list(csv.DictReader(open(out / 'probing' / 'table1_long.csv')))
    assert all(0 <= float(r['class_error']) <= 100 for r in long)
    blind = float(next(r for r in long if r['probe'] == 'none')['class_error'])
    for how in ('frozen', 'finetune'):                   # both readings, each with its own random-weights row
        t1 = [r for r in long if r['probe'] == how]
        assert [r['run'] for r in t1] == [''] + st['probing']['runs']
        assert min(float(r['class_error']) for r in t1[1:]) < float(t1[0]['class_error'])   # some encoder beats random
        assert max(float(r['class_error']) for r in t1) < blind                  # every encoder beats the image-blind guess
    occ = list(csv.DictReader(open(out / 'occlusion' / 'occlusion.csv')))
    fill = {r['scenario']: float(r['psnr_missing']) for r in occ if r['model'] == 'mean-colour fill'}
    for r in occ:                                        # both models beat the mean-colour fill in every box
        if r['model'] in st['occlusion']['runs']: assert float(r['psnr_missing']) > fill[r['scenario']], r
    page = (out / 'report' / 'index.html').read_text()
    for folder in ('grid', 'ablation', 'ce_report', 'probing', 'occlusion', 'figures'): assert f'id="{folder}"' in page
    assert page.index('id="claims"') < page.index('id="grid"') and '<td class="not' not in page   # every claim tested
    studies = [f.parent for f in out.glob('*/provenance.json')]
    assert page.count('data:image/png;base64,') == sum(len(list(f.glob('*.png'))) for f in studies) > 10
    assert '<script' not in page and not re.search(r'(src|href)="https?:', page)


@ran
@pytest.mark.skipif(shutil.which('dvc') is None, reason='dvc is not installed')
def test_pipeline_is_up_to_date_after_repro():
    r = subprocess.run(['dvc', 'status', '--json'], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    changed = {k: v for k, v in json.loads(r.stdout or '{}').items() if k != 'data.dvc'}   # data/raw: no remote here
    assert changed == {}, changed


# --- reproducibility: the pipeline, small, run twice ---------------------------------------------------------------
# CI's own `dvc repro` of the whole pipeline is compared with the committed dvc.lock (.ci/run). This test adds
# run-to-run identity on the machine at hand, on the stages that hold every kind of computation: training with
# each loss and hide-and-seek variant (the ablation's seven runs), the classifier, a CE run and two study
# notebooks. Two independent copies run side by side (the stages are mostly process start-up, one core each).

SMALL = {'data': {'img_size': 16, 'limit': 64, 'eval_images': 16},
         'model': {'widths': [8, 16], 'd_widths': [8, 16], 'convs_per_block': 1, 'fc_dim': 32, 'r_base': 4},
         'train': {'steps': 4, 'batch_size': 8, 'ckpt_every': 2, 'eval_every': 2, 'sample_every': 4, 'log_every': 1,
                   'progress': False},
         'losses': {'vgg_weights': 'random'},
         'studies': {'test_images': 32},
         'scores': {'steps': 10, 'batch_size': 16, 'width': 8}}
TARGETS = ('ablation', 'occlusion', 'train@CE32')


def _small_pipeline(dest):
    "A copy of the pipeline (code, stages, notebooks, params with SMALL sizes) in its own git + DVC repository."
    dest.mkdir()
    for f in ('dvc.yaml', 'data.dvc', 'params.yaml', '.dvcignore'): shutil.copy2(REPO / f, dest / f)
    for d in ('mde', 'profiles'): shutil.copytree(REPO / d, dest / d, ignore=shutil.ignore_patterns('__pycache__'))
    (dest / 'nbs').mkdir()
    for nb in ('grid.ipynb', 'ablation.ipynb', 'ce_report.ipynb', 'probing.ipynb', 'occlusion.ipynb', 'figures.ipynb'):
        shutil.copy2(REPO / 'nbs' / nb, dest / 'nbs' / nb)
    p = shrink_ce_runs(yaml.safe_load((dest / 'params.yaml').read_text()), sweep=12, steps=2)
    for section, values in SMALL.items(): p[section].update(values)
    (dest / 'params.yaml').write_text(yaml.safe_dump(p, sort_keys=False))
    (dest / 'data' / 'raw').mkdir(parents=True)
    for cmd in (['git', 'init', '-q'], ['dvc', 'init', '-q']): subprocess.run(cmd, cwd=dest, check=True)


def _repro_side_by_side(repos, *targets):
    "`dvc repro` in each repository at once (output to a log file in each: a full pipe would stall it); returns the locks."
    procs = []
    for r in repos:
        with open(r / 'repro.log', 'w') as log:
            procs.append(subprocess.Popen(['dvc', 'repro', *targets], cwd=r, stdout=log, stderr=subprocess.STDOUT))
    for r, p in zip(repos, procs):
        assert p.wait(timeout=1200) == 0, (r / 'repro.log').read_text()[-5000:]
    return [(r / 'dvc.lock').read_text() for r in repos]


def _trained(repo, what):
    return {f.parent.parent.name: f.read_bytes() for f in (repo / 'outputs' / 'runs').glob(f'*/{what}')}


@pytest.mark.skipif(shutil.which('dvc') is None or shutil.which('papermill') is None,
                    reason='needs dvc and papermill (pip install -r requirements.txt)')
def test_two_repro_runs_give_the_same_lock_metrics_and_tables(tmp_path):
    """Two copies of the pipeline reproduce the same stages: their lock files -- the hash of every output,
    checkpoints, models, metrics, tables and figures included -- hold the same entries (DVC writes them in the
    order the stages ran, which can differ), and the models, metrics and tables are the same byte for byte."""
    repos = [tmp_path / 'one', tmp_path / 'two']
    for r in repos: _small_pipeline(r)
    one, two = _repro_side_by_side(repos, *TARGETS)
    stages = set(yaml.safe_load(one)['stages'])
    runs = set(side_section('studies', repos[0] / 'params.yaml')['ablation']['runs'].values())
    assert {'data', 'classifier', 'ablation', 'occlusion', 'train@CE32'} | {f'train@{r}' for r in runs} <= stages
    metrics = _trained(repos[0], 'dvclive/metrics.json')
    assert len(metrics) >= len(runs) + 2 and metrics == _trained(repos[1], 'dvclive/metrics.json')
    assert _trained(repos[0], 'model.pt') == _trained(repos[1], 'model.pt')
    tables = [{str(f.relative_to(r)): f.read_bytes() for f in (r / 'outputs').glob('*/*.csv')} for r in repos]
    assert {'outputs/ablation/ablation.csv', 'outputs/occlusion/table3.csv'} <= set(tables[0]) and tables[0] == tables[1]
    one, two = yaml.safe_load(one)['stages'], yaml.safe_load(two)['stages']     # DVC orders the stages as it ran them
    assert one == two, f"dvc.lock differs between two runs of the same pipeline at {sorted(k for k in one if one[k] != two.get(k))}"


@pytest.mark.skipif(shutil.which('dvc') is None, reason='needs dvc (pip install -r requirements.txt)')
def test_the_lock_holds_exactly_the_pipelines_stages():
    "No stale entry (a stage since renamed or removed) survives in dvc.lock: `dvc repro` never deletes one."
    lock = yaml.safe_load((REPO / 'dvc.lock').read_text())['stages']
    r = subprocess.run(['dvc', 'stage', 'list', '--name-only'], cwd=REPO, capture_output=True, text=True, check=True)
    assert set(lock) == set(r.stdout.split()), set(lock) ^ set(r.stdout.split())


# --- dependencies follow the imports ----------------------------------------------------------------------------

def _mde_imports(tree):
    "The `mde` modules a parsed file imports anywhere (function-level imports too): `from .x`, `from mde.x`, `import mde.x`."
    found = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and (n.level == 1 or (n.module or '').split('.')[0] == 'mde'):
            parts = (n.module or '').split('.')[(0 if n.level else 1):]
            found |= {parts[0]} if parts and parts[0] else {a.name for a in n.names}
        elif isinstance(n, ast.Import):
            found |= {a.name.split('.')[1] for a in n.names if a.name.startswith('mde.')}
    return {m for m in found if (REPO / 'mde' / f'{m}.py').is_file()}


def _import_closure(modules):
    seen, todo = set(), list(modules)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m); todo += _mde_imports(ast.parse((REPO / 'mde' / f'{m}.py').read_text()))
    return seen


def _stage_entry_modules(cmd):
    "The mde modules a stage's command runs: `python -m mde.x`, and what a papermill notebook's code cells import."
    mods = set(re.findall(r'python -m mde\.(\w+)', cmd))
    for nb in re.findall(r'papermill (\S+\.ipynb)', cmd):
        cells = json.loads((REPO / nb).read_text())['cells']
        src = '\n'.join(l for c in cells if c['cell_type'] == 'code' for l in ''.join(c['source']).splitlines()
                        if not l.lstrip().startswith(('%', '!')))
        mods |= _mde_imports(ast.parse(src))
    return mods


def _stages():
    return {k: v.get('do', v) for k, v in yaml.safe_load((REPO / 'dvc.yaml').read_text())['stages'].items()}


def _deps(stage): return {d if isinstance(d, str) else next(iter(d)) for d in stage.get('deps', [])}


def test_import_closure_helpers_see_function_level_and_relative_imports():
    tree = ast.parse("from .masks import a\ndef f():\n    from mde.losses import b\n    import mde.data\nfrom mde import networks\n")
    assert _mde_imports(tree) == {'masks', 'losses', 'data', 'networks'}
    assert {'trainer', 'step', 'losses'} <= _import_closure({'trainer'})


@pytest.mark.parametrize('name', list(_stages()))
def test_every_stage_depends_on_every_mde_module_its_command_imports(name):
    """A stage's `deps` hold every mde/*.py its command imports, directly or through other modules: otherwise a
    change to that file leaves the stage's outputs stale without a warning."""
    stage = _stages()[name]
    need = {f'mde/{m}.py' for m in _import_closure(_stage_entry_modules(stage['cmd']))}
    assert need, f"{name}: found no mde module in {stage['cmd']!r}"
    missing = sorted(need - _deps(stage))
    assert not missing, f"dvc.yaml stage {name!r} reads but does not depend on {missing}"


def test_every_study_stage_depends_on_the_models_its_study_reads():
    "Each study's runs (params.yaml `studies:`) are deps of its stage, so a retrained model re-runs the study."
    studies, stages = side_section('studies', REPO / 'params.yaml'), _stages()
    for study in ('grid', 'ablation', 'ce_report', 'probing', 'occlusion', 'figures'):
        conf = studies[study]
        runs = set(conf['runs'].values() if isinstance(conf['runs'], dict) else conf['runs'])
        runs |= set(conf.get('sweep', [])) | set(conf.get('fig1', {}).values())
        missing = sorted(r for r in runs if f'outputs/runs/{r}/model.pt' not in _deps(stages[study]))
        assert not missing, f"dvc.yaml stage {study!r} reads the models of {missing} without depending on them"


def test_mde_has_no_import_cycle():
    """No module of mde imports, directly or through others, a module that imports it back (function-level imports
    included): each module can be read, tested and changed from the bottom layer up."""
    mods = {p.stem for p in (REPO / 'mde').glob('*.py')}
    graph = {m: _mde_imports(ast.parse((REPO / 'mde' / f'{m}.py').read_text())) - {m} for m in mods}
    cycles = [m for m in mods if m in _import_closure(graph[m])]
    assert not cycles, f"mde modules on an import cycle: {sorted(cycles)}"


def test_the_sweep_stages_come_from_params_yaml():
    "The sweep is `foreach: ${sweep_runs}`: its run names live in params.yaml only, not in a second list in dvc.yaml."
    raw = yaml.safe_load((REPO / 'dvc.yaml').read_text())['stages']['sweep']
    assert raw['foreach'] == '${sweep_runs}' and 'sweep_runs.${key}' in raw['do']['params']
    text = yaml.safe_dump(raw)
    named = [n for n in run_names(REPO / 'params.yaml', 'sweep_runs') if n in text]
    assert not named, f"dvc.yaml's sweep stage names runs by hand: {named}"


def test_no_module_imports_another_modules_private_name():
    "A name starting with `_` is its module's own business: another module that needs it needs a public name."
    bad = []
    for path in sorted((REPO / 'mde').glob('*.py')):
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.ImportFrom) and (n.level or (n.module or '').split('.')[0] == 'mde'):
                bad += [f'{path.stem} imports {a.name} from {n.module}' for a in n.names if a.name.startswith('_')]
    assert not bad, bad


def test_every_public_name_has_one_meaning():
    "No two modules export the same name (each command's `main` aside), and no function shadows another module."
    owners = {}
    for path in sorted((REPO / 'mde').glob('*.py')):
        for n in ast.parse(path.read_text()).body:
            if isinstance(n, ast.Assign) and any(getattr(t, 'id', None) == '__all__' for t in n.targets):
                for e in n.value.elts: owners.setdefault(e.value, []).append(path.stem)
    clashes = {k: v for k, v in owners.items() if len(v) > 1 and k != 'main'}
    assert not clashes, clashes
    modules = {p.stem for p in (REPO / 'mde').glob('*.py')}
    shadows = {k: v for k, v in owners.items() if k in modules and v != [k]}
    assert not shadows, f'public names that shadow a module of mde: {shadows}'
