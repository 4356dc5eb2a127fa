import pytest

from tomoloop.errors import PhaseMapError
from tomoloop.labels.phases import PhaseMap


def test_parse_keeps_order_and_resolves_names_and_values():
    phases = PhaseMap.parse("pore=0, nmc=1,cbd=2")
    assert phases.names == ("pore", "nmc", "cbd")
    assert phases.value("cbd") == 2
    assert phases.value("1") == 1
    assert phases.value(0) == 0
    assert phases.class_index(2) == 2
    assert str(phases) == "pore=0,nmc=1,cbd=2"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("pore=0,nmc", "NAME=VALUE"),
        ("pore=0,nmc=-1", "label values are ≥ 0; write NAME=VALUE"),
        ("pore=0,pore=1", "names repeat"),
        ("pore=0,nmc=0", "values repeat"),
        ("1pore=0", "not valid"),
        ("", "NAME=VALUE"),
    ],
)
def test_malformed_phase_maps_say_what_is_wrong(text, fragment):
    with pytest.raises(PhaseMapError, match=fragment):
        PhaseMap.parse(text)


def test_unknown_phase_is_an_error_naming_the_map():
    with pytest.raises(PhaseMapError, match="pore=0,nmc=1"):
        PhaseMap.parse("pore=0,nmc=1").value("cbd")


def test_default_names_from_values():
    assert PhaseMap.from_values([255, 0, 0]).names == ("background", "phase255")
