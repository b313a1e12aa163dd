"""Tests of mde.figures: the kept boxes drawn on REC fragments (kept_boxes), a model's own test scenario, Figs. 1, 5
and 6, and the figures study's files and provenance; on untrained smoke-size models, without training."""
import json

import matplotlib
import pytest
import torch
from helpers import runs_file, untrained_runs

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from mde.build import build_networks  # noqa: E402
from mde.data import load_dataset  # noqa: E402
from mde.evaluation import test_masks as protocol_masks  # noqa: E402  (not a test: pytest collects test_*)
from mde.figures import fig1, fig5, fig6, figures_study, kept_boxes, own_scenario  # noqa: E402
from mde.inference import Completer  # noqa: E402
from mde.params import SMOKE, smoke_params  # noqa: E402


@pytest.fixture(scope='module')
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp('figures')


@pytest.fixture(scope='module')
def images(scratch):
    return load_dataset('digits', 'test', root=scratch / 'data', img_size=16, limit=4, cache=False).images


def untrained(scratch, **over):
    p = smoke_params({'data.root': str(scratch / 'data'), **over})
    return Completer(p, {'G': build_networks(p)['G']}, step=0, name='untrained')


def test_kept_boxes_bound_the_kept_pixels_of_each_channel():
    M = protocol_masks('REC@0.1', 1, 32)[0]
    boxes = kept_boxes(M)
    assert len(boxes) == 3 and all(b is not None for b in boxes)
    for c, (t, l, h, w) in enumerate(boxes):
        assert M[c, t:t + h, l:l + w].min() == 1 and M[c].sum() == h * w        # one kept rectangle, exactly
    assert kept_boxes(torch.zeros(3, 4, 4)) == [None] * 3


def test_kept_boxes_of_hand_made_masks():
    M = torch.zeros(3, 6, 8)
    M[0, 1:3, 2:7] = 1                      # a rectangle
    M[1, 0, 0] = M[1, 5, 7] = 1             # two corners: the box spans the image
    assert kept_boxes(M) == [(1, 2, 2, 5), (0, 0, 6, 8), None]


@pytest.mark.parametrize('over, want', [({'mask': 'rec', 'S': 0.3}, 'REC@0.3'), ({'mask': 'random', 'S': 0.25}, 'RE@0.25'),
                                        ({'mask': 'reverse', 'S': 0.25}, 'RI@0.25'), ({'mask': 'color1'}, 'Col1')])
def test_own_scenario_is_the_mask_kind_and_S_a_model_was_trained_on(scratch, over, want):
    assert own_scenario(untrained(scratch, **over)) == want


def test_the_three_figures_have_their_panels(scratch, images):
    m = untrained(scratch, mask='rec', S=0.3)
    f = fig1({'a': m, 'b': m}, images[0], 'REC@0.3', title='t')
    assert [ax.get_title() for ax in f.axes] == ['input (REC@0.3)', 'a', 'b', 'ground truth']
    assert len(f.axes[0].patches) == 3 and f._suptitle.get_text() == 't'      # a kept box per channel
    f5 = fig5({'MDE-REC': m, 'MDE-RE': untrained(scratch, mask='random', S=0.25)}, images, n=3)
    assert len(f5.axes) == 2 * 2 * 3
    assert f5.axes[0].get_ylabel() == 'MDE-REC\nREC@0.3' and f5.axes[3].get_ylabel() == 'ground truth'
    assert len(f5.axes[0].patches) == 3 and len(f5.axes[6].patches) == 1       # RE: one box for all channels
    f6 = fig6(m, images, k=2, n=2)
    assert len(f6.axes) == 2 * (2 * 2 + 1)
    assert [ax.get_title() for ax in f6.axes[:5]] == ['mask 1', 'completion 1', 'mask 2', 'completion 2', 'ground truth']
    plt.close('all')


def test_figures_study_writes_the_figures_and_their_provenance(tmp_path):
    runs = {'RI': {'mask': 'reverse', 'S': 0.25}, 'REC10': {'mask': 'rec', 'S': 0.1}}
    path = runs_file(tmp_path, runs, {'test_seed': 5, 'test_images': 4,
                                      'figures': {'runs': {'MDE-RI': 'RI', 'MDE-REC': 'REC10'}, 'fig1': {'L2': 'REC10'}}})
    over = {**SMOKE, 'data.root': str(tmp_path / 'data')}
    untrained_runs(path, over, tmp_path / 'runs')
    made = figures_study(tmp_path / 'figs', path, tmp_path / 'runs', device='cpu', overrides=over, n=2, k=2)
    assert made['fig1_ablation.png'] == {'L2': {'run': 'REC10', 'step': 0}}
    assert made['fig5_completions.png'] == {'MDE-RI': {'run': 'RI', 'step': 0, 'scenario': 'RI@0.25'},
                                            'MDE-REC': {'run': 'REC10', 'step': 0, 'scenario': 'REC@0.1'}}
    assert made['fig6_samples.png'] == {'model': {'run': 'REC10', 'step': 0, 'scenario': 'REC@0.1'}}   # the REC model
    for f in made: assert (tmp_path / 'figs' / f).read_bytes()[:4] == b'\x89PNG'
    prov = json.loads((tmp_path / 'figs' / 'provenance.json').read_text())
    assert prov['study'] == 'figures' and prov['test_seed'] == 5 and prov['figures'] == made
    assert prov['data'] == {'name': 'digits', 'img_size': 16, 'n': 4}
    assert prov['models']['MDE-RI']['file'] == str(tmp_path / 'runs' / 'RI' / 'model.pt') and 'code' in prov


def test_figures_study_needs_its_section(tmp_path):
    path = runs_file(tmp_path, {'REC10': {'mask': 'rec', 'S': 0.1}}, {'grid': {'runs': ['REC10'], 'tests': ['REC@0.1']}})
    with pytest.raises(ValueError, match='has no `studies.figures` section'):
        figures_study(tmp_path / 'figs', path, tmp_path / 'runs', device='cpu')
    assert not (tmp_path / 'figs').exists()
