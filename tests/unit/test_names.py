"""The one name rule for datasets, volumes and models."""

import pytest

from tomoloop.names import NameRuleError, check_name


@pytest.mark.parametrize(
    "name, problem",
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("a\nb", "control character"),
        ("nmc\u200b", "control character"),  # an invisible format character
        ("nmc@2", "holds '@'"),
        ("runs/nmc", "holds '/'"),
        (" nmc", "starts or ends with a space"),
        ("x" * 201, "is 201 characters long"),
    ],
)
def test_names_breaking_the_rule_are_refused_with_the_rule(name, problem):
    with pytest.raises(NameRuleError, match=problem) as caught:
        check_name(name, "--name")
    message = str(caught.value)
    assert message.startswith("--name ") and "1–200 characters" in message
    assert "\n" not in message  # one line, whatever the name holds


@pytest.mark.parametrize("name", ["nmc", "nmc cathode 2", "électrode_β", "x" * 200])
def test_names_keeping_the_rule_pass_unchanged(name):
    assert check_name(name) == name
