"""Tests of mde.params: the YAML reader (YAML 1.2 floats), the schema of every key, and property-based tests (hypothesis)
over mask kinds, sizes and S, and over mutated parameter files and profiles: every bad value is a ValueError naming its
key, never an exception from deep inside; named runs and profiles laid over the file."""
import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import runs_file
from hypothesis import HealthCheck, event, given, settings, strategies as st

import mde.trainer
from mde.build import build
from mde.masks import MASK_KINDS
from mde.params import (SCHEMA, SCORE_DEFAULTS, flat, load_params, load_yaml, parse_sets, run_names, score_settings,
                        set_param, side_section, smoke_params, validate_params)
from mde.step import run_masks

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / 'params.yaml'
FILE = load_yaml(PARAMS.read_text())
PROFILES = sorted(p.stem for p in (REPO / 'profiles').glob('*.yaml'))
FAST = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def params_file(tmp_path, doc, text=None):
    "Write `doc` (or `text`) as tmp_path/params.yaml, with the repository's profiles beside it."
    f = tmp_path / 'params.yaml'
    f.write_text(yaml.safe_dump(doc, sort_keys=False) if text is None else text)
    if not (tmp_path / 'profiles').exists(): (tmp_path / 'profiles').symlink_to(REPO / 'profiles')
    return f


def refused(fn, *args, **kw):
    "The message of the ValueError `fn(*args, **kw)` raises (any other outcome fails the test)."
    with pytest.raises(ValueError) as e: fn(*args, **kw)
    return str(e.value)


# --- parameters, named runs and profiles: refused or laid over as documented -----------------------------

@pytest.mark.parametrize('over, words', [
    ({'S': 0}, 'strictly between 0 and 1'), ({'S': 1.5}, 'strictly between 0 and 1'),
    ({'S': float('nan')}, 'strictly between'), ({'mask': 'holes'}, 'mask must be one of'),
    ({'arch': 'vae'}, 'arch must be one of'), ({'data.name': 'imagenet'}, 'data.name must be one of'),
    ({'losses.hns_variant': 'hide'}, 'hns_variant'), ({'losses.adversarial': -1}, 'weight >= 0'),
    ({'train.steps': 0}, 'train.steps'), ({'train.stepz': 3}, 'unknown parameter'),
    ({'profile': 'nope'}, 'unknown profile'),
    ({'losses.completion': 0, 'losses.reconstruction': 0}, 'at least one'),
    ({'data.img_size': 20}, 'multiple of 8'), ({'arch': 'ce', 'data.img_size': 64}, '32 or 128'),
])
def test_bad_parameters_are_refused_before_training(over, words):
    with pytest.raises(ValueError, match=words):
        load_params(PARAMS, over)


@pytest.mark.parametrize('mask', ['inpaint', 'reverse', 'center', 'color1', 'color2'])
@pytest.mark.parametrize('variant', ['rec', 'alt', 'coord'])
def test_hide_and_seek_is_refused_where_the_mask_cannot_be_hidden(mask, variant):
    with pytest.raises(ValueError, match='cannot hide a mask'):
        load_params(PARAMS, {'mask': mask, 'losses.hns': 1.0, 'losses.hns_variant': variant})
    for ok in ('random', 'rec'):
        load_params(PARAMS, {'mask': ok, 'losses.hns': 1.0, 'losses.hns_variant': variant})


def test_named_runs_lay_over_the_file_and_overrides_over_them(tmp_path):
    f = runs_file(tmp_path, {'A': {'mask': 'rec', 'S': 0.1, 'losses': {'adversarial': 0.5}}, 'B': {'train.steps': 7}})
    assert run_names(f) == ['A', 'B']
    a = load_params(f, run='A')
    assert (a['run'], a['mask'], a['S'], a['losses']['adversarial'], a['losses']['completion']) == ('A', 'rec', 0.1, 0.5, 1.0)
    assert load_params(f, {'S': 0.3}, run='A')['S'] == 0.3            # overrides win over the run
    assert load_params(f, run='B')['train']['steps'] == 7              # dotted keys work too
    assert 'runs' not in a and 'studies' not in a                      # not part of any run


@pytest.mark.parametrize('runs, run, words', [
    ({'A': {'mask': 'rec'}}, 'Z', "unknown run 'Z'"),
    ({'A': {'losses': {'styel': 1.0}}}, 'A', "run 'A'.*unknown parameter 'losses.styel'"),
    ({'A': {'mask': 'inpaint', 'losses': {'hns': 1.0}}}, 'A', 'cannot hide'),
    ({'A': {'profile': 'paper-celeba'}}, 'A', 'may not set'),
    ({'bad name': {'mask': 'rec'}}, 'bad name', 'letters, digits'),
    ({'A': {'S': 0}}, 'A', 'strictly between'),
])
def test_bad_runs_are_refused_before_training(tmp_path, runs, run, words):
    f = runs_file(tmp_path, runs)
    with pytest.raises(ValueError, match=words):
        load_params(f, run=run)


def test_repository_runs_and_studies_are_valid():
    names = run_names(PARAMS)
    for n in names: load_params(PARAMS, run=n)
    studies = side_section('studies', PARAMS)
    assert set(studies['grid']['runs']) <= set(names)
    assert set(studies['ablation']['runs'].values()) <= set(names)


def test_paper_weights_are_one_setting_away():
    p = load_params(PARAMS, {'losses.preset': 'paper'}, run='REC10-alt')
    assert (p['losses']['perceptual'], p['losses']['adversarial'], p['losses']['hns']) == (2e-5, 1e-2, 10.0)
    c = load_params(PARAMS, {'losses.preset': 'paper'}, run='REC10-coord')
    assert c['losses']['hns'] == 0.1 and c['losses']['reconstruction'] == 1.0


def test_profile_lays_over_params_but_not_the_method():
    p = load_params(PARAMS, {'profile': 'paper-celeba', 'S': 0.1, 'mask': 'rec'})
    assert p['data']['name'] == 'celeba' and p['data']['img_size'] == 96 and p['model']['fc_dim'] == 4000
    assert p['train']['steps'] == 300000 and p['train']['batch_size'] == 24
    assert p['S'] == 0.1 and p['mask'] == 'rec'


def test_context_encoder_profiles_set_arch():
    p = load_params(PARAMS, {'profile': 'ce-cifar10'})
    assert p['arch'] == 'ce' and p['data']['name'] == 'cifar10' and p['data']['img_size'] == 32


def test_missing_params_file_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match='not found'):
        load_params('params.yaml')


# --- the YAML reader ------------------------------------------------------------------------------------

@pytest.mark.parametrize('text, want', [('1e-3', 1e-3), ('1E5', 1e5), ('+1e-3', 1e-3), ('-2e+2', -200.0), ('.5e1', 5.0),
                                        ('-1.', -1.0), ('1.0e-3', 1e-3), ('1.0e+5', 1e5), ('1.5e3', 1500.0),
                                        ('0.25', 0.25), ('.inf', math.inf)])
def test_yaml_reads_yaml_1_2_floats_as_floats(text, want):
    assert type(load_yaml(text)) is float and load_yaml(text) == want
    assert load_yaml(f'lr: {text}') == {'lr': want}


@pytest.mark.parametrize('text, want', [('1_000', 1000), ('12', 12), ('-3', -3), ('0x1e3', 0x1e3), ('true', True),
                                        ('false', False), ('no', False), ('null', None), ('1e', '1e'), ('e5', 'e5'),
                                        ('1e-3x', '1e-3x'), ("'1e-3'", '1e-3'), ('1.2.3', '1.2.3'), ('abc', 'abc')])
def test_yaml_keeps_ints_bools_and_strings(text, want):
    assert type(load_yaml(text)) is type(want) and load_yaml(text) == want


def test_yaml_reader_leaves_pyyaml_alone_and_names_what_it_read():
    assert yaml.safe_load('1e-3') == '1e-3'
    assert 'params.yaml' in refused(load_yaml, 'a: [1,', 'params.yaml')


# --- examples -------------------------------------------------------------------------------------------

def test_set_reads_1e_minus_3_as_a_number():
    sets = parse_sets(['train.lr_g=1e-3'])
    assert sets == {'train.lr_g': 0.001} and type(sets['train.lr_g']) is float
    assert load_params(PARAMS, sets)['train']['lr_g'] == 1e-3


def test_file_reads_1e_minus_3_as_a_number(tmp_path):
    text = PARAMS.read_text().replace('lr_g: 1.0e-3', 'lr_g: 1e-3').replace('steps: 400 ', 'steps: 4e2 ')
    assert 'lr_g: 1e-3' in text and 'steps: 4e2' in text
    p = load_params(params_file(tmp_path, None, text))
    assert type(p['train']['lr_g']) is float and p['train']['lr_g'] == 0.001
    assert type(p['train']['steps']) is int and p['train']['steps'] == 400          # an integral float: an int


def test_optimizer_gets_the_float():
    s = build(smoke_params({'train.lr_g': parse_sets(['x=1e-3'])['x']}, path=PARAMS))
    assert s.opts['G'].param_groups[0]['lr'] == 0.001


def test_cli_set_lr_reaches_training(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(mde.trainer, 'train', lambda p, out, **kw: seen.update(p) or {})
    mde.trainer.main(['--params', str(PARAMS), '--set', 'train.lr_g=1e-3', '--out', str(tmp_path / 'o')])
    assert type(seen['train']['lr_g']) is float and seen['train']['lr_g'] == 0.001


def test_cli_refuses_S_0_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, '-m', 'mde.trainer', '--params', str(PARAMS), '--set', 'S=0',
                        '--out', str(tmp_path / 'x')], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, 'OMP_NUM_THREADS': '1'})
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and 'Traceback' not in r.stderr and not (tmp_path / 'x').exists()
    assert last.startswith('mde-train: error: S must be a number strictly between 0 and 1'), r.stderr


@pytest.mark.parametrize('item, said', [('losses.style=1.0', "unknown parameter 'losses.style' (no such loss)"),
                                        ('train.lr_g=1e-3x', "train.lr_g must be a number > 0, got '1e-3x' (str)"),
                                        ('S=[0.1,', 'is not valid YAML')])
def test_cli_refuses_a_bad_value_with_exit_2(tmp_path, capsys, item, said):
    with pytest.raises(SystemExit) as e:
        mde.trainer.main(['--params', str(PARAMS), '--set', item, '--out', str(tmp_path / 'x')])
    err = capsys.readouterr().err
    assert e.value.code == 2 and said in err and 'Traceback' not in err and not (tmp_path / 'x').exists()


@pytest.mark.parametrize('S', [0, 1, -0.5, 1.5, float('nan'), float('inf'), '0.3', True, None, [0.3]])
def test_S_outside_0_1_is_refused(S):
    assert refused(load_params, PARAMS, {'S': S} if S is not None else {'S': 'null'}).startswith('S must be')


def test_unknown_loss_name_is_named():
    assert "'losses.style'" in refused(load_params, PARAMS, {'losses.style': 1.0})
    p = load_params(PARAMS)
    p['losses']['stlye'] = 0.1
    assert "unknown loss(es) 'losses.stlye'" in refused(validate_params, p)


def test_unknown_loss_in_the_file_is_named(tmp_path):
    doc = copy.deepcopy(FILE)
    doc['losses']['style'] = 1.0
    assert "'losses.style'" in refused(load_params, params_file(tmp_path, doc))


def test_unknown_key_in_a_run_names_run_and_key(tmp_path):
    doc = copy.deepcopy(FILE)
    doc['runs']['REC30']['train'] = {'stpes': 10}
    msg = refused(load_params, params_file(tmp_path, doc), run='I')          # not the run asked for: still checked
    assert "run 'REC30'" in msg and "'train.stpes'" in msg


def test_every_run_is_validated_when_the_file_is_read(tmp_path):
    doc = copy.deepcopy(FILE)
    doc['runs']['RE50']['S'] = 5
    msg = refused(load_params, params_file(tmp_path, doc))
    assert "run 'RE50'" in msg and 'S must be' in msg


@pytest.mark.parametrize('section, key, value, said', [
    ('top', 'lr_g', 1e-3, "unknown parameter 'lr_g'"),
    ('data', 'nmae', 'digits', "unknown parameter 'data.nmae'"),
    ('train', 'lr_g', '1e-3x', "train.lr_g must be a number > 0, got '1e-3x' (str)"),
    ('train', 'steps', 2.5, 'train.steps must be an integer >= 1'),
    ('train', 'steps', True, 'train.steps must be an integer >= 1, got True (bool)'),
    ('train', 'amp', 'yes', "train.amp must be true, false or 'auto'"),
    ('train', 'beta2', 1.0, 'train.beta2 must be a number in [0, 1)'),
    ('train', 'device', 'gpu', 'train.device must be auto, cpu, cuda or cuda:N'),
    ('train', 'poly_power', -1, 'train.poly_power must be a number >= 0'),
    ('data', 'download', 'ftp://x.org/', 'data.download must be true, false or the URL of a mirror'),
    ('data', 'limit', 0, 'data.limit must be null or an integer >= 1'),
    ('data', 'limit', 10, 'data.limit (10 training images) cannot fill'),
    ('data', 'img_size', 4, 'data.img_size must be an integer >= 8'),
    ('data', 'root', None, 'data.root must be a non-empty string'),
    ('model', 'widths', [], 'model.widths must be a non-empty list'),
    ('model', 'd_widths', [8, -1], 'model.d_widths must be a non-empty list'),
    ('model', 'perceptual_layers', 6, 'model.perceptual_layers must be an integer 1..5'),
    ('losses', 'preset', 'papers', "losses.preset must be null or 'paper'"),
    ('losses', 'adversarial', float('inf'), 'losses.adversarial must be a weight >= 0'),
    ('top', 'seed', -1, 'seed must be an integer >= 0'),
    ('top', 'profile', 'nope', "unknown profile 'nope'"),
    ('top', 'profile', '../x', 'profile must be null or the name of a file in profiles/'),
])
def test_bad_values_in_the_file_name_their_key(tmp_path, section, key, value, said):
    doc = copy.deepcopy(FILE)
    (doc if section == 'top' else doc[section])[key] = value
    assert said in refused(load_params, params_file(tmp_path, doc))


def test_missing_and_optional_keys(tmp_path):
    doc = copy.deepcopy(FILE)
    del doc['train']['lr_d']
    assert "missing parameter 'train.lr_d'" in refused(load_params, params_file(tmp_path, doc))
    doc = copy.deepcopy(FILE)
    for k in ('amp', 'channels_last', 'compile', 'device', 'progress'): del doc['train'][k]
    p = load_params(params_file(tmp_path, doc), {'train.amp': False})      # an optional key can still be set
    assert p['train']['amp'] is False and 'device' not in p['train']


def test_int_keys_take_integral_floats_and_mirrors_are_accepted():
    p = load_params(PARAMS, {'train.steps': 1e5, 'model.widths': [16.0, 32, 64], 'data.download': 'https://example.org/m/',
                             'train.device': 'cuda:1', 'data.limit': 1e3})
    assert p['train']['steps'] == 100000 and type(p['train']['steps']) is int and p['model']['widths'] == [16, 32, 64]
    assert type(p['data']['limit']) is int and p['data']['download'] == 'https://example.org/m/'


def test_profiles_are_checked(tmp_path):
    (tmp_path / 'profiles').mkdir()
    (tmp_path / 'profiles' / 'mine.yaml').write_text('train: {lr_g: fast}\n')
    (tmp_path / 'profiles' / 'typo.yaml').write_text('train: {stpes: 10}\n')
    doc = {**copy.deepcopy(FILE), 'profile': 'mine'}
    f = params_file(tmp_path, doc)
    assert "profile" in (m := refused(load_params, f)) and 'train.lr_g must be a number > 0' in m
    assert "unknown parameter 'train.stpes'" in refused(load_params, f, {'profile': 'typo'})


@pytest.mark.parametrize('change, said', [
    (lambda d: d['studies']['grid']['runs'].append('REC99'), 'studies.grid.runs names unknown run'),
    (lambda d: d['studies']['ablation']['runs'].update(f='nope'), "studies.ablation.runs.f names unknown run 'nope'"),
    (lambda d: d['studies']['ablation'].update(tests=['REC@1.5']), 'studies.ablation.tests'),
    (lambda d: d['studies']['grid'].update(colour='red'), "unknown parameter 'studies.grid.colour'"),
    (lambda d: d['studies']['grid'].pop('tests'), 'studies.grid.tests is missing'),
    (lambda d: d['studies'].update(test_images=0), 'studies.test_images must be null or an integer >= 1'),
    (lambda d: d['scores'].update(colour='red'), "'scores.colour'"),
    (lambda d: d['scores'].update(lr=float('nan')), 'scores.lr must be a finite number'),
    (lambda d: d['scores'].update(steps=-1), 'scores.steps'),
    (lambda d: d.update(runs=['I']), 'runs in'),
])
def test_side_sections_are_checked_when_the_file_is_read(tmp_path, change, said):
    doc = copy.deepcopy(FILE)
    change(doc)
    assert said in refused(load_params, params_file(tmp_path, doc))


def test_side_sections_and_run_names_use_the_same_reader(tmp_path):
    text = PARAMS.read_text().replace('lr: 1.0e-2', 'lr: 1e-2').replace('test_images: null', 'test_images: 1e2')
    f = params_file(tmp_path, None, text)
    assert side_section('scores', f)['lr'] == 0.01 and side_section('studies', f)['test_images'] == 100
    assert run_names(f) == run_names(PARAMS)


def test_schema_covers_every_key_of_params_and_profiles():
    own = {k: v for k, v in FILE.items() if k not in ('runs', 'sweep_runs', 'studies', 'scores')}
    assert set(flat(own)) == set(SCHEMA) - {'run', 'data.stand_in_for'}   # params.yaml sets every key (load_params the last)
    for name in PROFILES:
        assert set(flat(load_yaml((REPO / 'profiles' / f'{name}.yaml').read_text()))) <= set(SCHEMA), name
        load_params(PARAMS, {'profile': name})
    for run in run_names(PARAMS):
        entry = dict({**FILE['runs'], **FILE['sweep_runs']}[run] or {})
        assert set(flat(entry.pop('embedded', {}))) | set(flat(entry)) <= set(SCHEMA), run


# --- property-based: mask kinds, sizes and S --------------------------------------------------------------

SMOKE_P = smoke_params(path=PARAMS)            # widths [8, 16]: img_size a multiple of 4, at least 8
NOT_IN_0_1 = st.one_of(st.floats().filter(lambda x: not 0 < x < 1), st.integers(), st.booleans(), st.none(),
                       st.text(max_size=6), st.lists(st.floats(0.1, 0.9), max_size=2), st.just('0.5'))
ANY_S = st.one_of(st.floats(0, 1), st.floats(0.001, 0.999), NOT_IN_0_1)
ANY_SIZE = st.one_of(st.integers(-2, 72), st.sampled_from([16.0, 32.0, 12.5, '16', True, None, [16]]))


def _valid_S(S): return isinstance(S, float) and 0 < S < 1
def _valid_size(n):
    return not isinstance(n, bool) and isinstance(n, (int, float)) and float(n).is_integer() and n >= 8 and n % 4 == 0


@FAST
@given(kind=st.sampled_from(MASK_KINDS), size=ANY_SIZE, S=ANY_S)
def test_mask_kind_size_and_S(kind, size, S):
    p = copy.deepcopy(SMOKE_P)
    for k, v in (('mask', kind), ('data.img_size', size), ('S', S)): set_param(p, k, v)
    if not (_valid_S(S) and _valid_size(size)):
        msg = refused(validate_params, p)
        named = (['S must'] if not _valid_S(S) else []) + (['data.img_size'] if not _valid_size(size) else [])
        assert any(msg.startswith(n) or n in msg for n in named), (msg, named)
        return
    p = validate_params(p)
    n = p['data']['img_size']
    assert type(n) is int and n == size
    Z = torch.rand(2, 3, n, n)
    M, boxes = run_masks(p, Z, torch.Generator().manual_seed(0), return_boxes=True)
    assert M.shape == Z.shape and boxes.shape == (2, 3, 4)
    assert set(M.unique().tolist()) <= {0.0, 1.0}


@FAST
@given(S=NOT_IN_0_1, kind=st.sampled_from(MASK_KINDS), size=st.sampled_from([8, 16, 32]))
def test_S_outside_the_open_interval_always_names_S(S, kind, size):
    p = copy.deepcopy(SMOKE_P)
    for k, v in (('mask', kind), ('data.img_size', size), ('S', S)): set_param(p, k, v)
    assert refused(validate_params, p).startswith('S must be a number strictly between 0 and 1')


# --- property-based: mutated parameter files ------------------------------------------------------------

def _paths(d, prefix=''):
    "Every key path of nested dict `d`, sections included: 'data', 'data.name', 'runs.I', 'runs.I.mask', ..."
    out = []
    for k, v in d.items():
        out.append(f'{prefix}{k}')
        if isinstance(v, dict): out += _paths(v, f'{prefix}{k}.')
    return out


WRONG = st.one_of(st.text(max_size=12), st.lists(st.one_of(st.integers(-3, 300), st.text(max_size=3)), max_size=3),
                  st.dictionaries(st.text('abcxyz_', min_size=1, max_size=6), st.integers(-2, 2), max_size=2),
                  st.none(), st.integers(max_value=-1), st.integers(min_value=10 ** 9, max_value=10 ** 30),
                  st.floats(), st.booleans(), st.integers(0, 8), st.sampled_from(['1e-3', 'paper', 'rec', '0.5']))
HOW = st.sampled_from(['replace', 'replace', 'delete', 'add'])


def _get(doc, key):
    "The value at dotted `key` of nested dict `doc`."
    for k in key.split('.'): doc = doc[k]
    return doc


def _mutate(doc, key, how, value):
    "Mutate `doc` at dotted `key`; returns the dotted key an error must name."
    *parents, last = key.split('.')
    d = doc
    for k in parents: d = d[k]
    if how == 'replace': d[last] = value
    elif how == 'delete': del d[last]
    else:
        d['x_typo'] = value
        return '.'.join([*parents, 'x_typo'])
    return key


def _is_number(v): return isinstance(v, (int, float)) and not isinstance(v, bool)


def _surely_invalid(original, how, value, parent=''):
    """Whether a mutation is invalid whatever the key: an unknown key added (except a new run under `runs:` or
    `sweep_runs:`, whose keys are names), a section or list where a number, switch or word was, a NaN for a number, or
    letters for a number or a switch. (Deleting a key, a null's replacement or a plausible value may be valid.)"""
    if how == 'add': return parent not in ('runs', 'sweep_runs')
    if how != 'replace' or original is None or isinstance(original, (dict, list)): return False
    if isinstance(value, (dict, list)): return True
    if _is_number(original) and isinstance(value, float) and math.isnan(value): return True
    letters = isinstance(value, str) and value.isalpha() and value.lower() not in ('inf', 'nan', 'null', 'true', 'false', 'yes', 'no', 'on', 'off', 'y', 'n')
    return (_is_number(original) or isinstance(original, bool)) and letters


def _check_mutation(tmp_path, doc, named, must_refuse=False, **kw):
    "A mutated file loads, or is refused with a message naming the key; a surely invalid mutation must be refused."
    f = params_file(tmp_path, doc)
    try: load_params(f, **kw)
    except ValueError as e:
        event('refused')
        msg = str(e).replace(str(tmp_path), '<tmp>')
        assert named in msg or named.split('.')[-1] in msg, (named, msg)
        return
    event('loaded (the mutation was valid)')
    assert not must_refuse, f'{named}: an invalid value was accepted'


@FAST
@given(key=st.sampled_from(_paths(FILE)), how=HOW, value=WRONG)
def test_mutated_params_file_loads_or_names_the_key(tmp_path_factory, key, how, value):
    doc = copy.deepcopy(FILE)
    original, parent = _get(doc, key), key.rpartition('.')[0]
    named = _mutate(doc, key, how, value)
    _check_mutation(tmp_path_factory.mktemp('p'), doc, named, must_refuse=_surely_invalid(original, how, value, parent))


PROFILE_KEYS = [(name, k) for name in PROFILES for k in _paths(load_yaml((REPO / 'profiles' / f'{name}.yaml').read_text()))]


@settings(max_examples=80, deadline=None, database=None)
@given(target=st.sampled_from(PROFILE_KEYS), how=HOW, value=WRONG)
def test_mutated_profile_loads_or_names_the_key(tmp_path_factory, target, how, value):
    name, key = target
    tmp = tmp_path_factory.mktemp('p')
    (tmp / 'profiles').mkdir()
    for other in PROFILES: (tmp / 'profiles' / f'{other}.yaml').write_text((REPO / 'profiles' / f'{other}.yaml').read_text())
    prof = load_yaml((tmp / 'profiles' / f'{name}.yaml').read_text())
    original, parent = _get(prof, key), key.rpartition('.')[0]
    named = _mutate(prof, key, how, value)
    (tmp / 'profiles' / f'{name}.yaml').write_text(yaml.safe_dump(prof))
    must = _surely_invalid(original, how, value, parent)
    _check_mutation(tmp, {**copy.deepcopy(FILE), 'profile': name}, named, must_refuse=must)


@pytest.mark.parametrize('bad, why', [({'zz': 1}, 'a section'), ([1, 2], 'a list'), ('abc', 'letters'), (float('nan'), 'NaN')])
def test_every_scalar_of_params_yaml_refuses_a_surely_invalid_value(tmp_path, bad, why):
    "Deterministic sweep: every scalar key of params.yaml given a value of the wrong kind is refused, naming the key."
    accepted = []
    for i, key in enumerate(k for k in _paths(FILE) if not isinstance(_get(FILE, k), (dict, list))):
        original = _get(FILE, key)
        if not _surely_invalid(original, 'replace', bad): continue
        doc = copy.deepcopy(FILE)
        _mutate(doc, key, 'replace', bad)
        (tmp_path / str(i)).mkdir()
        try: load_params(params_file(tmp_path / str(i), doc))
        except ValueError as e: assert key.split('.')[-1] in str(e), (key, str(e))
        else: accepted.append(key)
    assert not accepted, f'{why} accepted for {accepted}'


def test_surely_invalid_is_not_too_eager():
    assert _surely_invalid(0.1, 'add', 0.2) and _surely_invalid(0.1, 'replace', {'a': 1})
    assert _surely_invalid(True, 'replace', 'maybe') and _surely_invalid(3, 'replace', float('nan'))
    assert not _surely_invalid(0.1, 'replace', 0.2) and not _surely_invalid(0.1, 'delete', None)
    assert not _surely_invalid('rec', 'replace', 'abc') and not _surely_invalid(True, 'replace', 'false')
    assert not _surely_invalid(None, 'replace', [1, 2]) and not _surely_invalid(None, 'add', {}, parent='runs')


# --- the method as the paper writes it: hide-and-seek form, reduction, VGG input, box aspect ratio ------------------

@pytest.mark.parametrize('key, value, said', [
    ('losses.hns_form', 'flip', "losses.hns_form must be one of ('paper', 'bce')"),
    ('losses.reduction', 'avg', "losses.reduction must be one of ('mean', 'sum')"),
    ('losses.vgg_input', 'rgb', "losses.vgg_input must be one of ('torchvision', 'caffe')"),
    ('losses.hns_real', 'yes', 'losses.hns_real must be true or false'),
    ('max_aspect', 0.5, 'max_aspect must be null'),
    ('max_aspect', 'wide', 'max_aspect must be null'),
    ('model.skips', -1, 'model.skips must be null or an integer >= 0'),
    ('model.skips', 9, 'model.skips must be at most 3 (one per level of model.widths)'),
])
def test_method_settings_are_checked(key, value, said):
    assert said in refused(load_params, PARAMS, {key: value})


def test_method_settings_reach_the_networks_and_losses():
    p = smoke_params({'mask': 'rec', 'losses.hns': 1.0, 'losses.hns_variant': 'alt', 'losses.reduction': 'sum',
                      'losses.perceptual': 0.1, 'losses.vgg_input': 'caffe', 'max_aspect': None})
    setup = build(p)
    assert setup.perceptual.reduction == 'sum' and setup.perceptual.vgg_input == 'caffe'
    assert load_params(PARAMS)['losses']['hns_form'] == 'paper' and load_params(PARAMS)['max_aspect'] == 3
    assert [s.skip for s in build(p).net('G').dec] == [True, True]             # the paper: a skip at every level
    assert [s.skip for s in build(smoke_params({'model.skips': 0})).net('G').dec] == [False, False]


def test_missing_vgg_weights_file_is_refused_before_training(tmp_path):
    msg = refused(load_params, PARAMS, {'losses.perceptual': 0.1, 'losses.vgg_weights': str(tmp_path / 'vgg.pth')})
    assert msg.startswith('losses.vgg_weights: no file at') and 'vgg.pth' in msg
    load_params(PARAMS, {'losses.perceptual': 0, 'losses.vgg_weights': str(tmp_path / 'vgg.pth')})  # unused: no error


def test_profiles_may_set_loss_conventions_not_weights(tmp_path):
    (tmp_path / 'profiles').mkdir()
    (tmp_path / 'profiles' / 'conv.yaml').write_text('losses: {reduction: sum, preset: paper}\n')
    (tmp_path / 'profiles' / 'weights.yaml').write_text('losses: {hns: 3}\n')
    f = params_file(tmp_path, {**copy.deepcopy(FILE), 'profile': 'conv'})
    p = load_params(f, run='REC10-alt')
    assert p['losses']['reduction'] == 'sum' and p['losses']['hns'] == 10.0 and p['losses']['adversarial'] == 1e-2
    assert "may set only the losses' options" in refused(load_params, f, {'profile': 'weights'})


def test_paper_profiles_use_the_papers_reading():
    for name in ('paper-celeba', 'paper-flowers', 'paper-mnist'):
        L = load_params(PARAMS, {'profile': name}, run='REC10-alt')['losses']
        assert (L['reduction'], L['hns_form'], L['vgg_weights'], L['perceptual'], L['hns']) == ('sum', 'paper', 'imagenet', 2e-5, 10.0)


def test_score_settings():
    s = score_settings({'seed': 3})
    assert s == {**SCORE_DEFAULTS, 'seed': 3}
    s = score_settings({'seed': 3, 'scores': {'steps': 10, 'seed': 9}}, {'width': 8})
    assert (s['steps'], s['seed'], s['width']) == (10, 9, 8)
    with pytest.raises(ValueError, match="'scores.stpes'"): score_settings({'seed': 0, 'scores': {'stpes': 1}})
    with pytest.raises(ValueError, match="'scores.bogus'"): score_settings({'seed': 0}, {'bogus': 1})
    for bad in ({'steps': 0}, {'lr': 0}, {'augment': 'maybe'}, {'held_out_fraction': 1.5}, {'device': 'tpu'},
                {'test_images': 1}, {'kid_subset_size': 1}):
        with pytest.raises(ValueError, match=f'scores.{next(iter(bad))}'): score_settings({'seed': 0}, bad)
    with pytest.raises(ValueError, match='mapping'): score_settings({'seed': 0, 'scores': [1]})
