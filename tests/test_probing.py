"""mde.probing: Tables 1-2 (linear probes on frozen encoders)."""
import csv
import json
from pathlib import Path

import pytest
import torch

from mde.data import ImageDataset
from mde.probing import (PAPER_TABLE1, RANDOM, TRIVIAL, encoder_features, probe_data, probe_model, probe_targets,
                         random_model)
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
    models = [RANDOM, *st['probing']['runs']]
    assert [(r['model'], r['probe']) for r in rows] == [(TRIVIAL, 'none')] + [(m, p) for m in models for p in ('frozen', 'finetune')]
    trivial = rows[0]                              # one class for every image: wrong on most of the ten digits
    assert trivial['class_error'] > 50 and trivial['run'] is None
    assert all(r['class_error'] < trivial['class_error'] for r in rows if r['probe'] == 'finetune')
    t1 = list(csv.DictReader(open(tmp / 'probing' / 'table1.csv')))
    assert [r['probe'] for r in t1] == ['none'] + ['frozen'] * len(models)
    assert t1[0]['pretraining'] == TRIVIAL and t1[0]['attributes (paper)'] == '-'
    assert t1[1]['pretraining'] == 'Random weights' and t1[1]['attributes (paper)'] == str(PAPER_TABLE1[0][4])
    tuned = list(csv.DictReader(open(tmp / 'probing' / 'table1_finetune.csv')))
    assert [r['probe'] for r in tuned] == ['none'] + ['finetune'] * len(models)
    frozen = {r['model']: r for r in rows if r['probe'] == 'frozen'}
    assert any(r['class_error'] != frozen[r['model']]['class_error'] for r in rows if r['probe'] == 'finetune')
    assert all(r['landmarks (ours, px)'] == 'n/a' for r in t1)               # digits have no landmarks: n/a, not 0
    md = (tmp / 'probing' / 'table1.md').read_text()
    assert 'probed: class' in md and 'not comparable' in md
    t2 = (tmp / 'probing' / 'table2.md').read_text()
    assert '9.17' in t2 and 'ours:' in t2
    prov = json.loads((tmp / 'probing' / 'provenance.json').read_text())
    assert prov['tasks'] == ['class'] and prov['settings']['steps'] == 60 and prov['models']['REC10']['step'] == 6
    assert prov['readings'] == ['frozen', 'finetune'] and prov['claims_probe'] == 'frozen'
    assert prov['settings']['finetune_steps'] == 30 and 'fine-tuned probe: the encoder' in md
    assert (tmp / 'probing' / 'fig_probing.png').stat().st_size > 0


@pytest.mark.skipif(not (REPO.parent / 'shared' / 'data' / 'celeba-subset.tar.gz').exists(),
                    reason='needs the CelebA subset in ../shared/data')
def test_probe_data_on_the_shared_celeba_holds_out_attributed_training_faces(tmp_path):
    d = {'name': 'celeba', 'root': str(tmp_path), 'source': str(REPO.parent / 'shared' / 'data'), 'img_size': 32,
         'limit': 400}
    data = probe_data(d, held_out=0.25, test_images=16)
    assert data['tasks'] == ['attributes', 'landmarks'] and 'held-out' in data['how']    # MTCNN's landmarks beside it
    n = len(data['eval'][0]) + len(data['fit'][0])
    assert 398 <= n <= 400 and len(data['eval'][0]) == round(n * 0.25)    # at most 2 of the subset have no landmarks
    assert not torch.isnan(data['eval'][1]['attributes']).all()
    assert any('detected by MTCNN' in x for x in data['notes'])


def test_probe_targets_name_the_landmark_file_and_count_what_is_left_out():
    lm = torch.rand(4, 10) * 32
    lm[1] = float('nan')
    info = {'name': 'celeba', 'split': 'train', 'bad_rows': {'landmarks': {'n': 1}},
            'landmarks': {'file': 'list_landmarks_align_celeba_mtcnn.txt', 'kind': 'detected'}}
    ds = ImageDataset(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.full((4,), -1), {'landmarks': lm}, info)
    t, notes = probe_targets(ds)
    assert torch.allclose(t['landmarks'], lm / 32, equal_nan=True)
    text = ' '.join(notes)
    assert '1 of 4 images without landmarks (1 malformed row(s) skipped' in text
    assert 'list_landmarks_align_celeba_mtcnn.txt, detected by MTCNN' in text and 'not annotated' in text
    ds.info['landmarks'] = {'file': 'list_landmarks_align_celeba.txt', 'kind': 'annotated'}
    assert 'detected' not in ' '.join(probe_targets(ds)[1])
