"""Loading rule sets from plain data (dicts, TOML), failing at load time with precise errors.

Rules arrive from TOML files, JSON, YAML or database rows; all of those become dicts, so
`load_rules()` takes a mapping and `load_rules_file()` reads TOML into one. Everything is
validated and compiled here: an unknown key, a wrong type, an unknown operator or a dangerous regex is a
`RulesConfigError` naming the source, the rule and the field (`rules.toml: rules[2] ('vip'):
conditions[0].op: expected one of equals, ..., got 'eq'`), never a failure while a message is processed.

Shape (every table optional):

```toml
[settings]
own_addresses = ["help@example.com"]     # added to MailboxContext.addresses for loop protection
duplicate_scope = "global"               # global | mailbox | destination
rate_limit = { max_tickets = 20, window_seconds = 3600 }
ignore_signals = ["auto.loop"]           # automatic-mail signals switched off (reason codes)
[settings.automatic]                     # kind -> open | append | ignore
mailing_list = "open"

[[filters]]
name = "spam"; type = "ignore"; domains = ["spam.example"]; keywords = ["viagra"]; mailboxes = ["sales"]
headers = ["X-Spam-Flag: YES", { name = "X-Spam-Status", op = "starts_with", value = "yes" }]

[[rules]]
name = "billing"; match = "all"
conditions = [{ field = "subject", op = "contains", value = "invoice" }]
actions = { department = "Billing", tags = ["billing"], stop = true }

[[rules]]
name = "spam"
conditions = [{ field = "header:X-Spam-Flag", op = "equals", value = "YES" }]
actions = { drop = true, drop_reason = "marked as spam by the mail server" }
```
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, Literal, cast

import attrs

from ticketmail._validators import at_least, one_of
from ticketmail.backends.base import custom_field_value
from ticketmail.errors import ConfigError, InvalidValueError
from ticketmail.rules._text import normalize_address
from ticketmail.rules.automatic import signal_codes
from ticketmail.rules.duplicates import DUPLICATE_SCOPES
from ticketmail.rules.filters import Filter, FilterType, HeaderTest
from ticketmail.rules.plan import RulePlan, compile_rules
from ticketmail.rules.routing import Actions, Condition, Rule

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, no-redef, unused-ignore]

__all__ = [
    "AUTOMATIC_DEFAULTS",
    "AutomaticPolicy",
    "RateLimit",
    "RuleSet",
    "RulesConfigError",
    "load_rules",
    "load_rules_file",
]

AutomaticPolicy = Literal["open", "append", "ignore"]

AUTOMATIC_DEFAULTS: Mapping[str, AutomaticPolicy] = {
    "auto_reply": "append",
    "out_of_office": "append",
    "bounce": "append",
    "delivery_report": "ignore",
    "feedback_report": "append",
    "mailing_list": "open",
    "bulk": "open",
}
"""What each kind of automatic mail may do: `open` a ticket, only be `append`-ed to an existing one,
or be `ignore`-d. Auto-replies, out-of-office notices, bounces and feedback reports can never be set to
`open` (that is how mail loops start)."""

_NEVER_OPEN = frozenset({"auto_reply", "out_of_office", "bounce", "delivery_report", "feedback_report"})


class RulesConfigError(ConfigError):
    """A rules configuration is invalid (unknown key, wrong type, bad operator, refused regex)."""

    code = "invalid_rules"


@attrs.frozen
class RateLimit:
    """At most `max_tickets` new tickets per sender within `window`."""

    max_tickets: int = attrs.field(validator=at_least(1, "RateLimit"))
    window: _dt.timedelta = attrs.field(validator=attrs.validators.instance_of(_dt.timedelta))


def _freeze_policy(value: Mapping[str, AutomaticPolicy]) -> Mapping[str, AutomaticPolicy]:
    merged = dict(AUTOMATIC_DEFAULTS)
    merged.update(value)
    return merged


def _freeze_addresses(value: object) -> frozenset[str]:
    items = value if isinstance(value, (list, tuple, set, frozenset)) else ()
    return frozenset(normalize_address(str(a)) for a in items if str(a).strip())


def _signal_codes(value: object) -> frozenset[str]:
    items = value if isinstance(value, (list, tuple, set, frozenset)) else ()
    return signal_codes(str(item) for item in items)


@attrs.frozen
class RuleSet:
    """A validated, compiled rule set. Build it once with `load_rules()` and share it freely."""

    filters: tuple[Filter, ...] = ()
    rules: tuple[Rule, ...] = ()
    own_addresses: frozenset[str] = attrs.field(default=frozenset(), converter=_freeze_addresses)
    rate_limit: RateLimit | None = None
    duplicate_scope: str = attrs.field(default="global", validator=one_of(DUPLICATE_SCOPES, "RuleSet"))
    automatic: Mapping[str, AutomaticPolicy] = attrs.field(factory=dict, converter=_freeze_policy, hash=False)
    ignore_signals: frozenset[str] = attrs.field(default=frozenset(), converter=_signal_codes)
    source: str = "<dict>"
    plan: RulePlan = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "plan", compile_rules(self.rules))


class _Path:
    """Builds error messages: `<source>: rules[2] ('vip'): conditions[0].op: ...`."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str, *, rule: str | None = None) -> RulesConfigError:
        label = f"{where} ({rule!r})" if rule else where
        return RulesConfigError(f"{self.source}: {label}: {message}", field=where)


def _kind_name(value: object) -> str:
    return type(value).__name__


def _expect_map(path: _Path, where: str, value: object, rule: str | None = None) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise path.fail(where, f"expected a table/mapping, got {_kind_name(value)}", rule=rule)
    return value


def _expect_list(path: _Path, where: str, value: object, rule: str | None = None) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise path.fail(where, f"expected a list, got {_kind_name(value)}", rule=rule)
    return list(value)


def _expect_str(path: _Path, where: str, value: object, rule: str | None = None, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        got = repr(value) if isinstance(value, str) else _kind_name(value)
        raise path.fail(where, f"expected a non-empty string, got {got}", rule=rule)
    return value


def _expect_bool(path: _Path, where: str, value: object, rule: str | None = None) -> bool:
    if not isinstance(value, bool):
        raise path.fail(where, f"expected true or false, got {_kind_name(value)}", rule=rule)
    return value


def _expect_int(path: _Path, where: str, value: object, rule: str | None = None, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise path.fail(where, f"expected an integer >= {minimum}, got {value!r}", rule=rule)
    return value


def _strings(path: _Path, where: str, value: object, rule: str | None = None) -> tuple[str, ...]:
    return tuple(
        _expect_str(path, f"{where}[{i}]", item, rule) for i, item in enumerate(_expect_list(path, where, value, rule))
    )


def _check_keys(path: _Path, where: str, data: Mapping[str, Any], allowed: set[str], rule: str | None = None) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise path.fail(where, f"unknown key {unknown[0]!r}; expected one of {', '.join(sorted(allowed))}", rule=rule)


def _load_filter(path: _Path, index: int, data: object) -> Filter:
    where = f"filters[{index}]"
    table = _expect_map(path, where, data)
    name = str(table.get("name") or f"filter {index + 1}")
    _check_keys(path, where, table, {"name", "type", "addresses", "domains", "keywords", "headers", "mailboxes"}, name)
    kind = str(table.get("type", "")).strip().lower()
    if kind not in ("allow", "ignore"):
        raise path.fail(f"{where}.type", f"expected 'allow' or 'ignore', got {table.get('type')!r}", rule=name)
    lists = {key: _strings(path, f"{where}.{key}", table.get(key, []), name) for key in ("addresses", "domains")}
    keywords = _strings(path, f"{where}.keywords", table.get("keywords", []), name)
    for i, domain in enumerate(lists["domains"]):
        if "@" in domain.strip().lstrip("@"):
            raise path.fail(f"{where}.domains[{i}]", f"expected a domain without '@', got {domain!r}", rule=name)
    for i, address in enumerate(lists["addresses"]):
        if "@" not in address:
            raise path.fail(f"{where}.addresses[{i}]", f"expected an email address, got {address!r}", rule=name)
    headers = tuple(
        _load_header_test(path, f"{where}.headers[{i}]", item, name)
        for i, item in enumerate(_expect_list(path, f"{where}.headers", table.get("headers", []), name))
    )
    if not (lists["addresses"] or lists["domains"] or keywords or headers):
        raise path.fail(where, "has no addresses, domains, keywords or headers (it would match nothing)", rule=name)
    return Filter(
        name=name,
        type=cast(FilterType, kind),
        addresses=lists["addresses"],
        domains=lists["domains"],
        keywords=keywords,
        headers=headers,
        mailboxes=_strings(path, f"{where}.mailboxes", table.get("mailboxes", []), name),
    )


def _load_header_test(path: _Path, where: str, data: object, rule: str) -> HeaderTest:
    """`"Name"` (present), `"Name: value"` (equals) or `{ name, value, op, case_sensitive }`."""
    if isinstance(data, str):
        name, colon, value = data.partition(":")
        fields: dict[str, Any] = {"name": name.strip(), "value": value.strip() if colon else None}
    else:
        table = _expect_map(path, where, data, rule)
        _check_keys(path, where, table, {"name", "value", "op", "case_sensitive"}, rule)
        fields = {"name": _expect_str(path, f"{where}.name", table.get("name"), rule)}
        if "value" in table:
            fields["value"] = _expect_str(path, f"{where}.value", table["value"], rule, empty=True)
        if "op" in table:
            if "value" not in table:
                raise path.fail(f"{where}.op", "an operator needs a value", rule=rule)
            fields["op"] = _expect_str(path, f"{where}.op", table["op"], rule)
        if "case_sensitive" in table:
            fields["case_sensitive"] = _expect_bool(path, f"{where}.case_sensitive", table["case_sensitive"], rule)
    try:
        return HeaderTest(**fields)
    except ValueError as exc:
        raise path.fail(where, str(exc), rule=rule) from exc


_ACTION_STR = ("department", "team", "category", "assignee", "reject_reason", "drop_reason")
_ACTION_INT = ("priority", "topic_id")
_ACTION_BOOL = ("reject", "drop", "skip_autorespond", "stop")


def _tags(path: _Path, where: str, value: object, rule: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_strings(path, where, value, rule)))


def _custom(path: _Path, where: str, value: object, rule: str) -> dict[str, Any]:
    """Custom field values, stored as typed JSON: numbers stay numbers, TOML dates and datetimes become ISO 8601."""
    typed: dict[str, Any] = {}
    for key, item in _expect_map(path, where, value, rule).items():
        if item is None or isinstance(item, bytes):
            raise path.fail(
                f"{where}.{key}", f"expected a string, number, boolean or date, got {_kind_name(item)}", rule=rule
            )
        try:
            typed[str(key)] = custom_field_value(item, field=f"{where}.{key}")
        except InvalidValueError as exc:
            raise path.fail(f"{where}.{key}", exc.message, rule=rule) from exc
    return typed


_ACTION_READERS: dict[str, Callable[[_Path, str, object, str], object]] = {
    **dict.fromkeys(_ACTION_STR, _expect_str),
    **dict.fromkeys(_ACTION_INT, _expect_int),
    **dict.fromkeys(_ACTION_BOOL, _expect_bool),
    "tags": _tags,
    "custom": _custom,
}
"""Action key -> the reader that checks and converts its value (in the order actions are read)."""


def _load_actions(path: _Path, where: str, data: object, rule: str) -> Actions:
    table = _expect_map(path, where, data, rule)
    _check_keys(path, where, table, set(_ACTION_READERS), rule)
    values = {
        key: read(path, f"{where}.{key}", table[key], rule) for key, read in _ACTION_READERS.items() if key in table
    }
    if values.get("drop") and values.get("reject"):
        raise path.fail(where, "drop and reject exclude each other (drop ignores silently, reject refuses)", rule=rule)
    return Actions(**values)  # type: ignore[arg-type]


def _load_rule(path: _Path, index: int, data: object, shared: dict[Condition, Condition]) -> Rule:
    where = f"rules[{index}]"
    table = _expect_map(path, where, data)
    name = str(table.get("name") or f"rule {index + 1}")
    _check_keys(path, where, table, {"name", "match", "conditions", "actions", "enabled"}, name)
    match = table.get("match", "all")
    if match not in ("all", "any"):
        raise path.fail(f"{where}.match", f"expected 'all' or 'any', got {match!r}", rule=name)
    conditions = []
    for i, item in enumerate(_expect_list(path, f"{where}.conditions", table.get("conditions", []), name)):
        cwhere = f"{where}.conditions[{i}]"
        cond = _expect_map(path, cwhere, item, name)
        _check_keys(path, cwhere, cond, {"field", "op", "value", "case_sensitive"}, name)
        field = _expect_str(path, f"{cwhere}.field", cond.get("field"), name)
        op = _expect_str(path, f"{cwhere}.op", cond.get("op"), name)
        value = _expect_str(path, f"{cwhere}.value", cond.get("value"), name, empty=True)
        case = _expect_bool(path, f"{cwhere}.case_sensitive", cond.get("case_sensitive", False), name)
        try:
            condition = Condition(field=field, op=op, value=value, case_sensitive=case)
        except ValueError as exc:
            text = str(exc)
            target = (
                "op"
                if text.startswith("unknown operator")
                else "field"
                if text.startswith("unknown field")
                else "value"
            )
            raise path.fail(f"{cwhere}.{target}", str(exc), rule=name) from exc
        # Equal conditions in several rules share one object, so evaluation tests each once per message.
        conditions.append(shared.setdefault(condition, condition))
    actions = _load_actions(path, f"{where}.actions", table.get("actions", {}), name)
    enabled = _expect_bool(path, f"{where}.enabled", table.get("enabled", True), name)
    return Rule(name=name, conditions=tuple(conditions), match=match, actions=actions, enabled=enabled)


def _load_settings(path: _Path, data: object) -> dict[str, Any]:
    table = _expect_map(path, "settings", data)
    _check_keys(
        path, "settings", table, {"own_addresses", "duplicate_scope", "rate_limit", "automatic", "ignore_signals"}
    )
    out: dict[str, Any] = {}
    if "own_addresses" in table:
        own = _strings(path, "settings.own_addresses", table["own_addresses"])
        for i, address in enumerate(own):
            if "@" not in address:
                raise path.fail(f"settings.own_addresses[{i}]", f"expected an email address, got {address!r}")
        out["own_addresses"] = own
    scope = table.get("duplicate_scope", "global")
    if scope not in DUPLICATE_SCOPES:
        raise path.fail("settings.duplicate_scope", f"expected one of {', '.join(DUPLICATE_SCOPES)}, got {scope!r}")
    out["duplicate_scope"] = scope
    if "rate_limit" in table:
        limit = _expect_map(path, "settings.rate_limit", table["rate_limit"])
        _check_keys(path, "settings.rate_limit", limit, {"max_tickets", "window_seconds"})
        out["rate_limit"] = RateLimit(
            max_tickets=_expect_int(path, "settings.rate_limit.max_tickets", limit.get("max_tickets"), minimum=1),
            window=_dt.timedelta(
                seconds=_expect_int(path, "settings.rate_limit.window_seconds", limit.get("window_seconds"), minimum=1)
            ),
        )
    if "automatic" in table:
        policy = _expect_map(path, "settings.automatic", table["automatic"])
        _check_keys(path, "settings.automatic", policy, set(AUTOMATIC_DEFAULTS))
        checked: dict[str, AutomaticPolicy] = {}
        for kind, value in policy.items():
            allowed = ("append", "ignore") if kind in _NEVER_OPEN else ("open", "append", "ignore")
            if value not in allowed:
                raise path.fail(f"settings.automatic.{kind}", f"expected one of {', '.join(allowed)}, got {value!r}")
            checked[kind] = value
        out["automatic"] = checked
    if "ignore_signals" in table:
        names = _strings(path, "settings.ignore_signals", table["ignore_signals"])
        try:
            out["ignore_signals"] = signal_codes(names)
        except ValueError as exc:
            raise path.fail("settings.ignore_signals", str(exc)) from exc
    return out


def load_rules(data: Mapping[str, Any], *, source: str = "<dict>") -> RuleSet:
    """Validate and compile a rule set from plain data (see the module docstring for the shape).

    Raises:
        RulesConfigError: (a `ConfigError`) naming `source`, the rule and the field.
    """
    path = _Path(source)
    table = _expect_map(path, "<top>", data)
    _check_keys(path, "<top>", table, {"settings", "filters", "rules"})
    settings = _load_settings(path, table.get("settings", {}))
    filters = tuple(
        _load_filter(path, i, item) for i, item in enumerate(_expect_list(path, "filters", table.get("filters", [])))
    )
    shared: dict[Condition, Condition] = {}
    rules = tuple(
        _load_rule(path, i, item, shared) for i, item in enumerate(_expect_list(path, "rules", table.get("rules", [])))
    )
    names = [r.name for r in rules]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise path.fail(f"rules[{index}].name", f"duplicate rule name {name!r}", rule=name)
    return RuleSet(filters=filters, rules=rules, source=source, **settings)


def load_rules_file(path: str | os.PathLike[str]) -> RuleSet:
    """Load a rule set from a TOML file.

    Raises:
        RulesConfigError: the file cannot be read, is not valid TOML, or its content is invalid.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise RulesConfigError(f"{name}: cannot read rules file ({exc.strerror or exc})", field=None) from exc
    except tomllib.TOMLDecodeError as exc:
        raise RulesConfigError(f"{name}: not valid TOML ({exc})", field=None) from exc
    return load_rules(data, source=name)
