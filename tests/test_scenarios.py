"""Tests for mde.scenarios: the test scenarios' names parsed and written canonically, round trips, errors; and
that the module is light (mde.params imports it to check the `studies:` section)."""
import subprocess
import sys

import pytest

from mde.scenarios import FIG7_SCENARIOS, SCENARIOS, parse_scenario, scenario_name


@pytest.mark.parametrize('name, expected', [
    ('I@0.25', ('inpaint', 0.25)), ('RI@0.5', ('reverse', 0.5)), ('Col1', ('color1', None)),
    ('Col2', ('color2', None)), ('RE@0.25', ('random', 0.25)), ('REC@0.1', ('rec', 0.1)), ('CE', ('center', None)),
    ('rec@.1', ('rec', 0.1)), (' random @ 0.3 ', ('random', 0.3)), ('col1@0.3', ('color1', None)),
    ('center', ('center', None)), ('inpaint@1e-1', ('inpaint', 0.1))])
def test_parse_scenario(name, expected):
    assert parse_scenario(name) == expected


@pytest.mark.parametrize('bad', ['RE', 'REC', 'I', 'RE@0', 'RE@1', 'RE@1.5', 'RE@-0.1', 'RE@nan', 'RE@inf', 'RE@x',
                                 'XY@0.1', 'Col3', '', 'RE@0.1@0.2', 'Col1@abc', 'RE 0.1', None, 0.25])
def test_parse_scenario_bad(bad):
    with pytest.raises(ValueError, match='valid forms'):
        parse_scenario(bad)


def test_scenario_name_and_round_trip():
    assert scenario_name('random', 0.25) == 'RE@0.25'
    assert scenario_name('rec', 0.1) == 'REC@0.1'
    assert scenario_name('color2', 0.7) == 'Col2' and scenario_name('center') == 'CE'
    assert scenario_name('RE', 0.5) == 'RE@0.5'
    for kind in ('inpaint', 'reverse', 'random', 'rec'):
        for S in (0.1, 1 / 3, 0.30000000000000004, 0.999):
            assert parse_scenario(scenario_name(kind, S)) == (kind, S)
    for name in FIG7_SCENARIOS + ('CE',):
        assert scenario_name(*parse_scenario(name)) == name
    with pytest.raises(ValueError, match='needs a masking ratio'):
        scenario_name('random')
    with pytest.raises(ValueError, match='unknown mask kind'):
        scenario_name('blur', 0.1)
    with pytest.raises(ValueError, match='open interval'):
        scenario_name('rec', 1.0)


def test_every_short_name_is_a_scenario_and_the_fig7_grid_is_canonical():
    for short, kind in SCENARIOS.items():
        assert parse_scenario(short + ('' if scenario_name(kind, 0.5) == short else '@0.5'))[0] == kind
    assert len(set(FIG7_SCENARIOS)) == len(FIG7_SCENARIOS) == 10
    assert all(scenario_name(*parse_scenario(n)) == n for n in FIG7_SCENARIOS)


def test_module_import_is_light():
    code = "import sys, mde.scenarios; print(any(m in sys.modules for m in ('mde.metrics', 'mde.evaluation')))"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ['False']
