"""Tests of mde.cards: the model card (README.md, Hugging Face format) of a finished run, read off the run's own files
(params.yaml, run.json, dvclive/metrics.json), and its command line; on hand-made run folders, without training."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mde.cards import DATA_TERMS, main, model_card, write_model_card

REPO = Path(__file__).resolve().parents[1]
MDE = {'arch': 'mde', 'mask': 'rec', 'S': 0.1, 'seed': 0, 'run': 'REC10',
       'data': {'name': 'celeba', 'img_size': 48}, 'model': {'widths': [16, 32, 64, 128], 'fc_dim': 512},
       'train': {'steps': 800, 'batch_size': 16},
       'losses': {'completion': 1.0, 'reconstruction': 1.0, 'perceptual': 0.1, 'adversarial': 0.0, 'hns': 0.0,
                  'hns_variant': 'alt', 'vgg_weights': 'random'}}
RUN = {'run': 'REC10', 'step': 800, 'perceptual_vgg': 'random (seed 0)', 'mde_version': '0.1.0', 'git_commit': 'abc123',
       'torch_version': '2.5', 'device': 'cpu (x86_64)', 'train_data': {'n': 4559, 'split_rule': 'the official split'},
       'eval_data': {'n': 128}}


def run_folder(d, params=MDE, run=RUN, metrics={'eval': {'psnr_missing': 15.91234, 'completion': 0.0123456}}):
    d.mkdir(parents=True, exist_ok=True)
    (d / 'params.yaml').write_text(yaml.safe_dump(params, sort_keys=False))
    (d / 'run.json').write_text(json.dumps(run))
    if metrics is not None:
        (d / 'dvclive').mkdir(exist_ok=True)
        (d / 'dvclive' / 'metrics.json').write_text(json.dumps(metrics))
    return d


def front_matter(card):
    assert card.startswith('---\n')
    return yaml.safe_load(card.split('---')[1])


def test_an_mde_card_says_what_how_how_well_and_under_which_terms(tmp_path):
    d = run_folder(tmp_path / 'REC10')
    card = model_card(d)
    front = front_matter(card)
    assert (front['license'], front['license_name'], front['datasets']) == ('other', 'celeba-terms', ['celeba'])
    assert front['license_link'] == DATA_TERMS['celeba'][3] and front['library_name'] == 'pytorch'
    assert 'missing-data-encoder' in front['tags'] and 'context-encoder' not in front['tags']
    res = front['model-index'][0]
    assert res['name'] == 'REC10' and res['results'][0]['dataset']['name'] == 'celeba (held-out split, 128 images)'
    assert res['results'][0]['metrics'] == [
        {'type': 'psnr_missing', 'name': 'held-out psnr_missing', 'value': 15.91234},
        {'type': 'completion', 'name': 'held-out completion', 'value': 0.01235}]          # rounded to 5 places
    assert '# REC10: Missing Data Encoder (MDE), mask kind rec, S = 0.1' in card
    assert 'mde 0.1.0, the mde code of commit `abc123`, torch 2.5, cpu (x86_64)' in card
    assert '4559 training images at 48 x 48 px (the official split)' in card
    assert 'random extrapolation per channel (REC)' in card and '(S = 0.1: the share of each channel kept)' in card
    assert '**Losses and weights**: completion 1.0, reconstruction 1.0, perceptual 0.1.' in card   # zero weights left out
    assert '800 updates at batch 16' in card and '[16, 32, 64, 128], FC 512 units; seed 0' in card
    assert "the perceptual loss's VGG-16: random (seed 0), standing in for the ImageNet weights" in card
    assert '| psnr_missing | 15.9123 |' in card and '| completion | 0.0123 |' in card
    assert f"load_model('{(d / 'model.pt').as_posix()}')" in card and 'python -m mde.complete' in card
    assert 'non-commercial research only' in card


def test_a_context_encoder_card_and_the_digits_licence(tmp_path):
    p = {**MDE, 'arch': 'ce', 'mask': 'center', 'run': 'CE32',
         'data': {'name': 'digits', 'img_size': 32, 'stand_in_for': 'cifar10'},
         'losses': {'completion': 1.0, 'adversarial': 0.001, 'perceptual': 0.0}}
    run = {k: v for k, v in RUN.items() if k not in ('run', 'step', 'train_data')}
    card = model_card(run_folder(tmp_path / 'CE32', p, run, metrics=None))
    front = front_matter(card)
    assert (front['license'], front['datasets']) == ('cc-by-4.0', ['digits']) and 'license_name' not in front
    assert 'context-encoder' in front['tags'] and front['model-index'][0]['results'][0]['metrics'] == []
    assert '# CE32: Context Encoder' in card and "the Context Encoder's centre hole." in card and 'S = ' not in card
    assert 'digits stands in for cifar10 (the embedded default: no download)' in card
    assert "? training images at 32 x 32 px (the data set's own split)" in card
    assert '800 updates at batch 16' in card                        # no step recorded: the configured steps
    assert 'CC BY 4.0' in card and 'non-commercial' not in card and 'ImageNet' not in card


def test_hide_and_seek_and_an_unknown_data_set(tmp_path):
    p = {**MDE, 'data': {'name': 'mystery', 'img_size': 16},
         'losses': {**MDE['losses'], 'perceptual': 0.0, 'hns': 10.0, 'hns_variant': 'coord', 'hns_form': 'bce'}}
    card = model_card(run_folder(tmp_path / 'run', p, {**RUN, 'run': None}))
    front = front_matter(card)
    assert front['datasets'] == ['mystery'] and front['license'] == 'other' and front['license_link'] == ''
    assert '# REC10:' in card                                       # run.json names no run: params.yaml's
    assert 'hns 10.0; hide-and-seek variant coord, form bce.' in card and '**Stand-ins**: none.' in card
    assert 'mystery: see its source.' in card


def test_the_run_folder_name_is_the_last_resort(tmp_path):
    p = {k: v for k, v in MDE.items() if k != 'run'}
    card = model_card(run_folder(tmp_path / 'my-run', p, {k: v for k, v in RUN.items() if k != 'run'}))
    assert front_matter(card)['model-index'][0]['name'] == 'my-run' and '# my-run:' in card


@pytest.mark.parametrize('missing', ['params.yaml', 'run.json'])
def test_an_unfinished_run_is_refused(tmp_path, missing):
    d = run_folder(tmp_path / 'run')
    (d / missing).unlink()
    with pytest.raises(FileNotFoundError, match=f'{missing} is missing: .* is not a finished run \\(train it first\\)'):
        model_card(d)


def test_write_model_card_and_the_command_line(tmp_path, capsys):
    d = run_folder(tmp_path / 'REC10')
    f = write_model_card(d)
    assert f == d / 'README.md' and f.read_text() == model_card(d)
    f.unlink()
    assert main([str(d)]) == 0 and f.is_file() and str(f) in capsys.readouterr().out
    assert main([str(d), str(tmp_path / 'nothing')]) == 1
    err = capsys.readouterr().err
    assert f"mde-cards: skipped {tmp_path / 'nothing'}" in err and 'is not a finished run' in err
    r = subprocess.run([sys.executable, '-m', 'mde.cards', str(tmp_path / 'nothing')], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1 and 'skipped' in r.stderr and 'Traceback' not in r.stderr


def test_every_data_set_of_mde_has_its_terms():
    from mde.data import DATASETS
    assert set(DATASETS) <= set(DATA_TERMS)
    for name, (ds, lic, terms, link) in DATA_TERMS.items():
        assert ds and lic and terms and (link.startswith('http') or name == 'folder')
