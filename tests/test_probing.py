"""mde.probing: Tables 1-2 (linear probes on frozen encoders)."""
import csv
import json
from pathlib import Path

import pytest
import torch

from mde.data import ImageDataset
from mde.probing import (PAPER_TABLE1, RANDOM, encoder_features, probe_data, probe_model, probe_targets, random_model)
from mde.studies import load_run

REPO = Path(__file__).resolve().parents[1]


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


def test_the_encoder_stays_frozen_and_random_weights_are_seeded(study_project):
    tmp, path, st = study_project
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


def test_probing_study_tables(study_project, probed):
    tmp, path, st = study_project
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
