"""Fixtures shared by the study tests (test_probing, test_occlusion, test_html_report): one small project, trained once
per test session, and its probing study."""
from pathlib import Path

import pytest
import torch
import yaml

from mde.params import load_params, load_yaml, side_section
from mde.probing import probing_study
from mde.trainer import train

REPO = Path(__file__).resolve().parents[1]
STUDY_SMALL = {'data': {'img_size': 16, 'eval_images': 16},
               'train': {'steps': 6, 'batch_size': 8, 'ckpt_every': 6, 'eval_every': 6, 'sample_every': 6, 'log_every': 3,
                         'progress': False},
               'model': {'widths': [8, 16], 'd_widths': [8, 16], 'convs_per_block': 1, 'fc_dim': 32, 'r_base': 4},
               'losses': {'vgg_weights': 'random'}}


@pytest.fixture(scope='session')
def study_project(tmp_path_factory):
    "The repository's params.yaml at 16 px, and the runs the probing / occlusion / figures studies read, trained briefly."
    torch.set_num_threads(2)
    tmp = tmp_path_factory.mktemp('studies')
    conf = load_yaml((REPO / 'params.yaml').read_text())
    for k, v in STUDY_SMALL.items(): conf[k].update(v)
    conf['data']['root'] = str(tmp / 'data')
    conf['studies']['test_images'] = 24
    conf['studies']['probing']['runs'] = ['Col1', 'REC10']          # two of the grid's, to keep it short
    conf['studies']['probing']['probe'] = {'steps': 60, 'batch_size': 16, 'finetune_steps': 30}
    path = tmp / 'params.yaml'
    path.write_text(yaml.safe_dump(conf, sort_keys=False))
    st = side_section('studies', path)
    names = {*st['probing']['runs'], *st['occlusion']['runs'].values(), *st['figures']['runs'].values(),
             *st['figures']['fig1'].values()}
    for name in sorted(names): train(load_params(path, run=name), tmp / 'runs' / name)
    return tmp, path, st


@pytest.fixture(scope='session')
def probed(study_project):
    tmp, path, st = study_project
    return probing_study(tmp / 'probing', path, tmp / 'runs', progress=False)
