"""mde.figures and mde.html_report: Figs. 1, 5, 6 and the offline HTML report."""
import re
import shutil

from mde.figures import figures_study
from mde.html_report import build_report, md_to_html


def test_figures_and_the_offline_report(study_project, probed):
    tmp, path, st = study_project
    made = figures_study(tmp / 'figs', path, tmp / 'runs', n=3, k=2)
    assert set(made) == {'fig1_ablation.png', 'fig5_completions.png', 'fig6_samples.png'}
    assert made['fig5_completions.png']['MDE-REC'] == {'run': 'REC10-alt', 'step': 6, 'scenario': 'REC@0.1'}
    out = tmp / 'results'
    for src, dst in ((tmp / 'figs', 'figures'), (tmp / 'probing', 'probing')):
        shutil.copytree(src, out / dst)
    page = build_report(out, out / 'report' / 'index.html').read_text()
    assert page.count('data:image/png;base64,') == len(list(out.glob('*/*.png')))
    assert '<script' not in page and not re.search(r'(src|href)="https?:', page)
    assert 'REC10 @ 6' in page and 'test mask seed: 2024' in page
    assert '<th>pretraining</th>' in page and 'probed class labels' in page
    assert page.index('<h2 id="claims">') < page.index('<h2 id="probing"')          # the answer first
    assert "The paper's claims, tested on digits" in page and 'Every MDE pretraining transfers' in page
    probing = page[page.index('<h2 id="probing"'):]
    assert probing.index('alt="fig_probing.png"') < probing.index('table1.md')     # each study leads with its figure
    assert '<details><summary>' in probing and probing.index('<details>') < probing.index('table1_long.md')   # folded


def test_md_to_html_escapes_and_keeps_alignment():
    h = md_to_html('### a<b\n\n| x | y |\n|---|---:|\n| <i> | 2 |\n\n- n')
    assert '<h4>a&lt;b</h4>' in h and '&lt;i&gt;' in h and 'text-align:right">2<' in h and '<li>n</li>' in h
