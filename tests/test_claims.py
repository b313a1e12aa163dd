"""mde.claims: each claim of the paper tested on a run's tables; and the faces script's refusal of a folder without CelebA."""
import json
import subprocess
from pathlib import Path

from mde.claims import claims_table, write_claims
from mde.tables import write_table

REPO = Path(__file__).resolve().parents[1]
MASKS = {'random weights': 'rec', 'I': 'inpaint', 'RI': 'reverse', 'REC10': 'rec', 'REC30': 'rec'}


def _probing(d, err, how='frozen'):
    "A probing folder whose frozen rows have these landmark/attribute errors {model: (px, %)}."
    rows = [{'model': 'trivial', 'probe': 'none', 'run': None, 'landmark_error': 2.5, 'attr_error': 20.0}]
    rows += [{'model': m, 'probe': how, 'run': None if m == 'random weights' else m, 'landmark_error': e[0],
              'attr_error': e[1]} for m, e in err.items()]
    write_table(rows, d / 'probing', 'table1_long')
    prov = {'claims_probe': how, 'tasks': ['landmarks', 'attributes'],
            'models': {m: {'mask': MASKS[m]} for m in err}}
    (d / 'probing' / 'provenance.json').write_text(json.dumps(prov))


def _verdicts(d): return {r['claim'].split(':')[0][:30]: r['holds'] for r in claims_table(d)}


def test_table1_claims_follow_the_numbers(tmp_path):
    _probing(tmp_path, {'random weights': (3.0, 19.0), 'I': (2.9, 18.0), 'RI': (2.0, 17.0), 'REC10': (1.5, 16.0),
                        'REC30': (1.8, 15.0)})
    rows = claims_table(tmp_path)[:4]
    assert [r['holds'] for r in rows] == ['yes', 'partly', 'yes', 'yes']   # I's 2.9 px is above the mean shape's 2.5
    assert 'landmarks: 4 of 4 below random' in rows[0]['ours'] and 'RI 2.00 vs I 2.90' in rows[2]['ours']
    assert 'best REC (REC10) 1.50' in rows[3]['ours'] and 'best REC (REC30) 15.00' in rows[3]['ours']


def test_table1_claims_fail_when_the_encoders_do_not_learn(tmp_path):
    _probing(tmp_path, {'random weights': (1.7, 14.0), 'I': (2.6, 20.0), 'RI': (2.8, 21.0), 'REC10': (2.7, 19.0),
                        'REC30': (1.6, 22.0)})
    rows = claims_table(tmp_path)[:4]
    assert [r['holds'] for r in rows] == ['partly', 'partly', 'no', 'yes']
    assert rows[0]['where'] == 'Table 1 (frozen probe)' and 'image-blind' in rows[1]['ours']


def test_grid_ablation_and_occlusion_claims(tmp_path):
    g = tmp_path / 'grid'
    k, a, b = 'train \\ test', 'I@0.25', 'REC@0.1'
    write_table([{k: 'I', a: 20.0, b: 10.0}, {k: 'REC10', a: 18.0, b: 16.0}, {k: 'mean-colour fill', a: 12.0, b: 16.5}],
                g, 'grid_psnr')
    write_table([{k: 'I', a: 5.0, b: 6.0}, {k: 'REC10', a: 4.0, b: 4.0}], g, 'grid_is')
    (g / 'provenance.json').write_text(json.dumps({'models': {'I': {'mask': 'inpaint', 'S': 0.25},
                                                              'REC10': {'mask': 'rec', 'S': 0.1}}}))
    ab = [{'model': m, 'S': S, 'is': v} for S in (0.1, 0.3) for m, v in zip('abcde', (1, 2, 3, 4, 5 if S == 0.1 else 3.5))]
    write_table(ab, tmp_path / 'ablation', 'ablation')
    t3 = [{'occlusion': o, 'pSNR MDE-REC (box)': 20.0 + i, 'pSNR baseline (box)': 21.0, 'SSIM MDE-REC (box)': 0.8,
           'SSIM baseline (box)': 0.7} for i, o in enumerate(('right half', 'left half', 'mouth'))]
    write_table(t3, tmp_path / 'occlusion', 'table3')
    rows = {r['claim']: r for r in claims_table(tmp_path)}
    learned, generic = (rows[c] for c in rows if c.startswith(('The models learned', 'MDE-REC generalises')))
    assert learned['holds'] == 'partly' and '1 of 2 above the fill on their own test' in learned['ours']
    assert 'I 20.00 vs 12.00 (I@0.25)' in learned['ours'] and 'REC10 16.00 vs 16.50 (REC@0.1)' in learned['ours']
    assert generic['holds'] == 'partly' and 'psnr: best mean REC10' in generic['ours'] and 'score: best mean I' in generic['ours']
    full, pa = (rows[c] for c in rows if c.startswith(('The full loss', 'Perceptual + adversarial')))
    assert full['holds'] == 'partly' and 'S=0.30: best d' in full['ours'] and pa['holds'] == 'yes'
    occ = next(r for c, r in rows.items() if c.startswith('The full MDE-REC'))
    assert occ['holds'] == 'partly' and occ['ours'].startswith('pSNR 1 of 3') and 'SSIM 3 of 3' in occ['ours']
    assert next(r for c, r in rows.items() if c.startswith('Every MDE'))['holds'] == 'not run'   # no probing folder
    write_claims(tmp_path, tmp_path / 'kept', data='toy')
    assert "tested on toy" in (tmp_path / 'kept' / 'claims.md').read_text()


def test_faces_script_refuses_a_folder_without_celeba(tmp_path):
    out = subprocess.run(['bash', str(REPO / 'scripts' / 'faces_cpu.sh'), str(tmp_path)], capture_output=True,
                         text=True, cwd=REPO, timeout=120)
    assert out.returncode == 2 and 'no CelebA in' in out.stderr and str(tmp_path) in out.stderr
    assert 'img_align_celeba' in out.stderr and out.stdout == ''
