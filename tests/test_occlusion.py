"""mde.occlusion: Table 3 (targeted occlusions)."""
import csv
import json

from mde.data import load_dataset
from mde.evaluation import evaluate
from mde.occlusion import PAPER_TABLE3, occlusion_study
from mde.build import pick_device
from mde.provenance import device_name
from mde.studies import load_run


def test_occlusion_study_is_the_evaluation_of_each_model(study_project):
    tmp, path, st = study_project
    rows = occlusion_study(tmp / 'occ', path, tmp / 'runs', classifier=tmp / 'none.pt', progress=False, n_show=2)
    t3 = list(csv.DictReader(open(tmp / 'occ' / 'table3.csv')))
    assert [r['occlusion'] for r in t3] == ['Right half', 'Left half', 'Both eyes', 'Right eye', 'Left eye', 'Mouth']
    assert float(t3[2]['pSNR GFC (paper)']) == PAPER_TABLE3['both_eyes']['psnr'][1]
    ds = load_dataset('digits', 'test', root=tmp / 'data', img_size=16, limit=24)
    m = load_run('REC10-alt', path, tmp / 'runs')                     # Table 3's MDE-REC: the full model
    want = evaluate(m, ds.images, ['mouth'], progress=False)[0]
    got = next(r for r in t3 if r['occlusion'] == 'Mouth')
    assert abs(float(got['pSNR MDE-REC']) - want['psnr']) < 1e-3 and abs(float(got['SSIM MDE-REC (box)']) - want['ssim_missing']) < 1e-3
    assert 'geometric stand-ins' in (tmp / 'occ' / 'table3.md').read_text()
    L = json.loads((tmp / 'occ' / 'provenance.json').read_text())['models']['MDE-REC']['losses']
    assert L['perceptual'] > 0 and L['adversarial'] > 0 and L['hns'] > 0 and (L['hns_variant'], L['hns_form']) == ('alt', 'paper')
    md = (tmp / 'occ' / 'table3.md').read_text()
    assert 'MDE-REC = run REC10-alt' in md and 'HnS alt (paper form)' in md and 'MDE-REC-L2 = run REC10' in md
    assert 'baseline = run SQ25' in md and 'completion + reconstruction + adversarial' in md
    assert {r['losses'] for r in csv.DictReader(open(tmp / 'occ' / 'occlusion.csv')) if r['model'] == 'MDE-REC-L2'} == \
        {'completion + reconstruction'}
    assert (tmp / 'occ' / 'fig_occlusions.png').stat().st_size > 0
    # the study ran where `device='auto'` (the default) points, the GPU when there is one, and says so
    assert json.loads((tmp / 'occ' / 'provenance.json').read_text())['device'] == device_name(pick_device('auto'))
