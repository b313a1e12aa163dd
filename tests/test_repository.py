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
