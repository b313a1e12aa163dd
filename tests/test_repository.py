"The repository's front matter: the citation file GitHub reads, and the README's citation that repeats it."
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_citation_cff_cites_the_paper_and_the_repository():
    c = yaml.safe_load((REPO / 'CITATION.cff').read_text(encoding='utf-8'))
    assert c['cff-version'] == '1.2.0' and c['type'] == 'software' and c['title'] and c['authors']
    settings = (REPO / 'settings.ini').read_text()
    assert c['repository-code'] == re.search(r'^git_url = (\S+)', settings, re.M)[1]       # one address for the code
    assert str(c['version']) == re.search(r'^version = (\S+)', settings, re.M)[1]
    paper = c['preferred-citation']
    assert 'Missing Data Encoder' in paper['title'] and [a['family-names'] for a in paper['authors']] == ['Dapogny', 'Cord', 'Pérez']
    arxiv = paper['identifiers'][0]['value'].removeprefix('arXiv:')
    readme = (REPO / 'README.md').read_text(encoding='utf-8')
    bib = readme[readme.index('@article{'):]
    assert arxiv in paper['url'] and f'arXiv:{arxiv}' in bib and paper['title'] in bib   # the README says the same


LINK = re.compile(r'\]\(([^)\s]+)\)')       # every Markdown link and image: ](target)


def relative_links(md):
    "The targets of `md`'s links that are paths in the repository (no scheme, no bare #anchor), anchors dropped."
    for target in LINK.findall(md.read_text(encoding='utf-8')):
        if re.match(r'[a-z][a-z0-9+.-]*:', target, re.I) or target.startswith('#'): continue
        yield target.split('#')[0]


def test_readme_is_a_front_door():
    "A short README: the two commands CI runs (.ci/run reads them between the markers), details in docs/ pages."
    readme = REPO / 'README.md'
    assert readme.stat().st_size < 10_000, f'README.md is {readme.stat().st_size} bytes: move details into docs/'
    text = readme.read_text(encoding='utf-8')
    for tag, cmd in (('install', 'pip install -r requirements.txt && dvc repro'),
                     ('test', 'nbdev_test --n_workers 2 && pytest -q')):
        assert re.search(rf'<!-- {tag} -->\n```bash\n{re.escape(cmd)}\n```', text), f'the {tag} block after its marker'
    pages = sorted((REPO / 'docs').glob('*.md'))
    assert pages, 'no docs/ pages'
    broken = [f'{md.relative_to(REPO)}: {t}' for md in [readme, *pages] for t in relative_links(md)
              if not (md.parent / t).exists()]
    assert not broken, f'relative links to nothing: {broken}'
    linked = {(REPO / t).resolve() for t in relative_links(readme)}
    assert not [p.name for p in pages if p.resolve() not in linked], 'a docs page the README does not link'
    for p in pages:                                  # each page: a title, then the way back
        head = p.read_text(encoding='utf-8').split('\n')[:3]
        assert head[0].startswith('# ') and head[2] == '[← README](../README.md)', p.name


def test_readme_figure_is_the_notebooks():
    "The README's figure is a committed notebook output, copied out by scripts/readme_figure.py (digits only)."
    import importlib.util
    spec = importlib.util.spec_from_file_location('readme_figure', REPO / 'scripts' / 'readme_figure.py')
    fig = importlib.util.module_from_spec(spec); spec.loader.exec_module(fig)
    assert fig.FIGURE.relative_to(REPO).as_posix() in (REPO / 'README.md').read_text(encoding='utf-8')
    assert fig.FIGURE.read_bytes() == fig.notebook_figure(), 'run: python scripts/readme_figure.py'
