"""The README's figure, copied out of a committed notebook output (made on the embedded digits, no real data).

    python scripts/readme_figure.py            # write results/embedded/test_masks.png
    python scripts/readme_figure.py --check    # exit 1 when the committed PNG is not the notebook's figure

The figure is `nbs/12_evaluation.ipynb`'s `show_test_masks`: the Fig. 7 test scenarios (and the CE report's centre
hole) drawn by the fixed test protocol on test digits. Re-executing that notebook (docs/developing.md) can change
its bytes; run this script again then.
"""
import argparse, base64, json, sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / 'nbs' / '12_evaluation.ipynb'
CELL = 'show_test_masks(images, FIG7_SCENARIOS'     # the source of the cell whose figure this is
FIGURE = REPO / 'results' / 'embedded' / 'test_masks.png'


def notebook_figure(notebook=NOTEBOOK, cell=CELL):
    "The PNG bytes of the one image output of the code cell whose source contains `cell`."
    cells = [c for c in json.loads(notebook.read_text(encoding='utf-8'))['cells']
             if c['cell_type'] == 'code' and cell in ''.join(c['source'])]
    pngs = [o['data']['image/png'] for c in cells for o in c.get('outputs', []) if 'image/png' in o.get('data', {})]
    if len(pngs) != 1:
        raise SystemExit(f'{notebook.name}: expected one figure from the cell calling {cell!r}, found {len(pngs)} '
                         '(execute the notebook with its outputs: docs/developing.md)')
    return base64.b64decode(pngs[0])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--check', action='store_true', help='compare instead of writing')
    a = ap.parse_args(argv)
    png = notebook_figure()
    if a.check:
        same = FIGURE.is_file() and FIGURE.read_bytes() == png
        print(f"{FIGURE.relative_to(REPO)}: {'the notebook figure' if same else 'differs from the notebook figure: run scripts/readme_figure.py'}")
        return 0 if same else 1
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    FIGURE.write_bytes(png)
    print(f'wrote {FIGURE.relative_to(REPO)} ({len(png)} bytes) from {NOTEBOOK.relative_to(REPO)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
