"""Loading rule sets: valid shapes, and errors that name the source, rule and field."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from ticketmail.errors import ConfigError
from ticketmail.rules import Filter, RateLimit, RuleSet, load_rules, load_rules_file

TOML = """
[settings]
own_addresses = ["Help@Desk.Example"]
duplicate_scope = "destination"
rate_limit = { max_tickets = 5, window_seconds = 3600 }

[settings.automatic]
mailing_list = "ignore"

[[filters]]
name = "spam"
type = "ignore"
domains = ["spam.example"]
keywords = ["casino"]

[[rules]]
name = "billing"
match = "any"
conditions = [
  { field = "subject", op = "contains", value = "invoice" },
  { field = "header:X-Department", op = "equals", value = "billing" },
]
actions = { department = "Billing", priority = 2, tags = ["billing", "money"], custom = { region = "EU" }, stop = true }
"""


def test_load_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(TOML, encoding="utf-8")
    rules = load_rules_file(path)
    assert isinstance(rules, RuleSet)
    assert rules.own_addresses == frozenset({"help@desk.example"})
    assert rules.duplicate_scope == "destination"
    assert rules.rate_limit is not None
    assert rules.rate_limit.window == dt.timedelta(hours=1)
    assert rules.automatic["mailing_list"] == "ignore"
    assert rules.automatic["bounce"] == "append"  # defaults kept
    assert rules.filters[0].domains == ("spam.example",)
    rule = rules.rules[0]
    assert rule.match == "any"
    assert rule.actions.tags == ("billing", "money")
    assert rule.actions.custom == {"region": "EU"}
    assert rules.source == str(path)


def test_empty_config_is_valid() -> None:
    rules = load_rules({})
    assert rules.filters == ()
    assert rules.rules == ()


def test_ruleset_is_frozen() -> None:
    import attrs

    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        load_rules({}).rules = ()  # type: ignore[misc]


def fails(data: dict[str, Any], *fragments: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_rules(data, source="rules.toml")
    for fragment in ("rules.toml", *fragments):
        assert fragment in info.value.message, info.value.message
    return info.value


def test_errors_name_file_rule_and_field() -> None:
    err = fails(
        {"rules": [{"name": "ok"}, {"name": "vip", "conditions": [{"field": "subject", "op": "eq", "value": "x"}]}]},
        "rules[1]",
        "'vip'",
        "conditions[0].op",
        "unknown operator 'eq'",
    )
    assert err.field == "rules[1].conditions[0].op"
    assert err.code == "invalid_rules"


def test_dangerous_regex_fails_at_load() -> None:
    fails(
        {"rules": [{"name": "bad", "conditions": [{"field": "body", "op": "regex", "value": "(a+)+$"}]}]},
        "'bad'",
        "conditions[0].value",
        "catastrophic",
    )


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        ({"rulez": []}, ("unknown key 'rulez'",)),
        ({"rules": {}}, ("rules", "expected a list")),
        ({"rules": [{"name": "r", "colour": "red"}]}, ("'r'", "unknown key 'colour'")),
        ({"rules": [{"name": "r", "match": "most"}]}, ("rules[0].match", "expected 'all' or 'any'")),
        ({"rules": [{"name": "r", "actions": {"priority": "high"}}]}, ("actions.priority", "expected an integer")),
        ({"rules": [{"name": "r", "actions": {"stop": "yes"}}]}, ("actions.stop", "expected true or false")),
        ({"rules": [{"name": "r", "actions": {"tags": "x"}}]}, ("actions.tags", "expected a list")),
        ({"rules": [{"name": "r", "actions": {"custom": {"a": float("nan")}}}]}, ("actions.custom.a",)),
        ({"rules": [{"name": "r", "actions": {"delete": True}}]}, ("unknown key 'delete'",)),
        ({"rules": [{"name": "r", "conditions": [{"field": "subject", "op": "contains"}]}]}, ("conditions[0].value",)),
        ({"rules": [{"name": "r", "conditions": [{"field": "nope", "op": "contains", "value": "x"}]}]}, (".field",)),
        ({"rules": [{"name": "a"}, {"name": "a"}]}, ("duplicate rule name",)),
        ({"filters": [{"name": "f", "type": "block", "domains": ["x.example"]}]}, ("filters[0].type",)),
        ({"filters": [{"name": "f", "type": "allow"}]}, ("'f'", "would match nothing")),
        ({"filters": [{"name": "f", "type": "allow", "domains": ["a@b.example"]}]}, ("domains[0]", "without '@'")),
        ({"filters": [{"name": "f", "type": "allow", "addresses": ["nobody"]}]}, ("addresses[0]",)),
        ({"settings": {"duplicate_scope": "planet"}}, ("settings.duplicate_scope",)),
        ({"settings": {"own_addresses": ["desk"]}}, ("settings.own_addresses[0]",)),
        ({"settings": {"rate_limit": {"max_tickets": 0, "window_seconds": 60}}}, ("max_tickets", ">= 1")),
        ({"settings": {"automatic": {"bounce": "open"}}}, ("settings.automatic.bounce", "append, ignore")),
        ({"settings": {"automatic": {"spam": "open"}}}, ("unknown key 'spam'",)),
    ],
)
def test_invalid_configs(data: dict[str, Any], fragments: tuple[str, ...]) -> None:
    fails(data, *fragments)


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_rules_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rules]\nname=", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_rules_file(bad)
    assert str(bad) in info.value.message


def test_direct_construction_uses_the_shared_validators() -> None:
    """Built in code rather than loaded, the option classes still refuse bad values, naming the field."""
    with pytest.raises(ConfigError, match=r"Filter\.type must be one of 'allow', 'ignore', got 'block'"):
        Filter(name="f", type="block", keywords=["x"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"RateLimit\.max_tickets must be an integer >= 1, got 0"):
        RateLimit(max_tickets=0, window=dt.timedelta(seconds=60))
    with pytest.raises(ConfigError, match=r"RuleSet\.duplicate_scope must be one of"):
        RuleSet(duplicate_scope="everywhere")
