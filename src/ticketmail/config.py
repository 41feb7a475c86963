"""One configuration file for every command: `ticketmail.toml` loaded once into a validated `Config`.

Every table is optional; `docs/configuration.md` documents every key::

    [storage]          # path = "tickets.sqlite3" (SQLite) or url = "postgresql://..."; state_dir
    [[mailboxes]]      # ticketmail.sources.config.MailboxConfig, one table per mailbox
    [rules]            # include = "rules.toml" and/or inline settings, [[rules.filters]], [[rules.rules]]
    [threading]        # ticketmail.threading.ThreadingOptions
    [forms]            # custom fields: [[forms.fields]]; extends the default form unless replace = true
    [attachments]      # ticketmail.attachments.AttachmentPolicy
    [limits]           # API payload limits (ticketmail.parsing.limits.Limits); [limits.email]: EmailOptions
    [api]              # keys, max_body, trusted_proxies, host, port, mailbox, ignore_unknown_fields
    [poller]           # time_budget, idle_slice, backoff_base, backoff_cap, backoff_jitter, concurrency
    [receive]          # kept raw for the LMTP/SMTP receiver to validate (config.tables["receive"])
    [alerts]           # ticketmail.alerts.AlertSettings (config.alerts; raw in config.tables["alerts"])

Errors are `ConfigError` naming the file, the table and the key, with a "did you
mean" for a misspelt name: ``ticketmail.toml: [threading] subjet_tag: unknown key; did you mean
'subject_tag'?`. Secret values (passwords, tokens, URL passwords) never appear in a message or a `repr``.

A mailbox whose table is invalid does not stop the others: `load()` records its error in
`Config.mailbox_errors` (the commands report it and exit non-zero) and keeps the valid mailboxes.
Everything else is strict: one bad key anywhere else and nothing runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from ticketmail._config_tables import (
    API_KEYS,
    DEFAULT_MAX_BODY,
    LEASE_TTL_RANGE,
    STORAGE_KEYS,
    ApiConfig,
    StorageConfig,
    api_from_table,
    check_keys,
    did_you_mean,
    expect,
    mask_url,
    storage_from_table,
)
from ticketmail.attachments import AttachmentPolicy
from ticketmail.errors import ConfigError
from ticketmail.parsing.fields import Form, FormField
from ticketmail.parsing.limits import Limits
from ticketmail.parsing.mime import EmailOptions
from ticketmail.rules import RuleSet, load_rules
from ticketmail.sources.config import MailboxConfig, SourcesConfig, mailbox_from_dict, mask_secrets
from ticketmail.threading import ThreadingOptions, load_threading

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "API_KEYS",
    "DEFAULT_CONFIG_NAME",
    "DEFAULT_MAX_BODY",
    "EXTERNAL_TABLES",
    "LEASE_TTL_RANGE",
    "STORAGE_KEYS",
    "TABLES",
    "ApiConfig",
    "Config",
    "StorageConfig",
    "build_form",
    "did_you_mean",
    "load",
    "load_data",
    "mask_url",
]

DEFAULT_CONFIG_NAME = "ticketmail.toml"

EXTERNAL_TABLES: tuple[str, ...] = ("receive", "alerts")
"""Tables kept raw in `Config.tables` for the modules that use them (`[alerts]` is also validated
into `Config.alerts` at load time)."""

TABLES: tuple[str, ...] = (
    "storage",
    "mailboxes",
    "rules",
    "threading",
    "forms",
    "attachments",
    "limits",
    "api",
    "poller",
    *EXTERNAL_TABLES,
)
"""Every top-level table a configuration file may hold."""

RULES_KEYS: tuple[str, ...] = ("include", "settings", "filters", "rules")
FORMS_KEYS: tuple[str, ...] = ("replace", "fields", "ignore_unknown_fields")
POLLER_DEFAULTS: Mapping[str, float] = {
    "time_budget": 120.0,
    "idle_slice": 5.0,
    "backoff_base": 5.0,
    "backoff_cap": 900.0,
    "backoff_jitter": 0.5,
    "concurrency": 1.0,
}


@attrs.frozen
class Config:
    """A loaded, validated configuration (see the module docstring for the tables).

    Attributes:
        path: The file it came from (`None` for data given in Python).
        storage: `[storage]`.
        mailboxes: The valid `[[mailboxes]]`, in file order.
        mailbox_errors: One error per invalid mailbox table (the valid ones still run).
        rules: The rule set from `[rules]`, or `None` for the built-in defaults.
        threading: `[threading]`.
        form: The custom fields API payloads may carry (`[forms]`; the default form when absent).
        ignore_unknown_fields: `[forms] ignore_unknown_fields`: drop payload members the form does not
            know instead of refusing the request.
        attachments: `[attachments]`.
        limits: `[limits]` (API payload limits).
        email_options: `[limits.email]` (email parsing options and limits).
        api: `[api]`.
        poller: `[poller]` with every default filled in.
        alerts: `[alerts]` validated (`ticketmail.alerts.AlertSettings`), or `None` without the table.
        tables: The raw tables other modules validate (`receive`, `alerts`), by name.
        sources: The same file as a `SourcesConfig` (secrets masked in
            its `raw`).
    """

    path: str | None
    storage: StorageConfig = attrs.field(factory=StorageConfig)
    mailboxes: tuple[MailboxConfig, ...] = ()
    mailbox_errors: tuple[ConfigError, ...] = ()
    rules: RuleSet | None = None
    threading: ThreadingOptions = attrs.field(factory=ThreadingOptions)
    form: Form = attrs.field(factory=Form.default)
    ignore_unknown_fields: bool = False
    attachments: AttachmentPolicy = attrs.field(factory=AttachmentPolicy)
    limits: Limits = attrs.field(factory=Limits)
    email_options: EmailOptions = attrs.field(factory=EmailOptions)
    api: ApiConfig = attrs.field(factory=ApiConfig)
    poller: Mapping[str, float] = attrs.field(factory=lambda: dict(POLLER_DEFAULTS), hash=False)
    alerts: Any = None
    tables: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict, hash=False, repr=False)
    sources: SourcesConfig | None = attrs.field(default=None, repr=False, eq=False)

    @property
    def base_dir(self) -> Path:
        """The directory relative paths of the file are resolved against."""
        return Path(self.path).resolve().parent if self.path else Path.cwd()

    def mailbox(self, name: str) -> MailboxConfig:
        """The mailbox called `name`.

        Raises:
            ConfigError: No valid mailbox has that name (an invalid one is named with its error).
        """
        for mailbox in self.mailboxes:
            if mailbox.name == name:
                return mailbox
        for error in self.mailbox_errors:
            if error.field == f"mailbox:{name}":
                raise ConfigError(f"mailbox {name!r} is not usable: {error.message}", field="mailbox")
        have = ", ".join(m.name for m in self.mailboxes) or "none"
        hint = did_you_mean(name, [m.name for m in self.mailboxes]) if self.mailboxes else ""
        raise ConfigError(
            f"{self.path or '<config>'}: no mailbox named {name!r}{hint} (have: {have})",
            field="mailbox",
        )


# -- loading -----------------------------------------------------------------------------------------------


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
            return data
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read ({type(exc).__name__}: {exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc


def load(path: str | os.PathLike[str]) -> Config:
    """Load and validate a configuration file.

    Raises:
        ConfigError: The file cannot be read, is not TOML, or holds an unknown table or key or a bad
            value outside `[[mailboxes]]` (see `Config.mailbox_errors` for those).
    """
    file = Path(path)
    return load_data(_read_toml(file), source=str(file), base_dir=file.resolve().parent)


def _table(doc: Mapping[str, Any], name: str, source: str) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [{name}]: expected a table, got {type(value).__name__}", field=name)
    return value


def load_data(
    doc: Mapping[str, Any], *, source: str = "<dict>", base_dir: str | os.PathLike[str] | None = None
) -> Config:
    """Validate configuration data already parsed (a TOML document as a dict); see `load()`."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    for name, value in doc.items():
        if name not in TABLES:
            kind = "table" if isinstance(value, (dict, list)) else "key"
            hint = did_you_mean(name, TABLES)
            raise ConfigError(f"{source}: [{name}]: unknown {kind}{hint}", field=name)
    storage = storage_from_table(_table(doc, "storage", source), source, base)
    mailboxes, errors = _mailboxes(doc.get("mailboxes", []), source, base)
    tables = {name: dict(_table(doc, name, source)) for name in EXTERNAL_TABLES if name in doc}
    api = api_from_table(_table(doc, "api", source), source, base)
    limits_table = dict(_table(doc, "limits", source))
    email_table = limits_table.pop("email", {})
    sources = SourcesConfig(
        path=source if base_dir is not None else None,
        sqlite=storage.path,
        storage=dict(_table(doc, "storage", source)),
        mailboxes=mailboxes,
        raw=mask_secrets(doc),
    )
    return Config(
        path=source if base_dir is not None else None,
        storage=storage,
        mailboxes=mailboxes,
        mailbox_errors=errors,
        rules=_rules(_table(doc, "rules", source), source, base),
        threading=_threading(_table(doc, "threading", source), source),
        form=_form(_table(doc, "forms", source), source),
        ignore_unknown_fields=bool(_table(doc, "forms", source).get("ignore_unknown_fields", False)),
        attachments=AttachmentPolicy.from_mapping(_table(doc, "attachments", source), source=source),
        limits=_limits(limits_table, source),
        email_options=_email_options(email_table, source),
        api=api,
        poller=_poller(_table(doc, "poller", source), source),
        alerts=_alerts(tables.get("alerts"), source),
        tables=tables,
        sources=sources,
    )


def _mailboxes(entries: object, source: str, base: Path) -> tuple[tuple[MailboxConfig, ...], tuple[ConfigError, ...]]:
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: [mailboxes]: expected an array of tables ([[mailboxes]])", field="mailboxes")
    mailboxes: list[MailboxConfig] = []
    errors: list[ConfigError] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        label = f"{source}: mailboxes[{index}]"
        try:
            mailbox = mailbox_from_dict(entry, base_dir=base, where=label)
            if mailbox.name in seen:
                raise ConfigError(f"{label}.name: duplicate mailbox name {mailbox.name!r}", field="name")
        except ConfigError as exc:
            tag = f"mailbox:{name}" if isinstance(name, str) else f"mailbox:#{index}"
            errors.append(ConfigError(exc.message, field=tag))
            continue
        seen.add(mailbox.name)
        mailboxes.append(mailbox)
    return tuple(mailboxes), tuple(errors)


def _rules(table: Mapping[str, Any], source: str, base: Path) -> RuleSet | None:
    if not table:
        return None
    check_keys(table, RULES_KEYS, source, "rules")
    includes = table.get("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) and i.strip() for i in includes):
        raise ConfigError(f"{source}: [rules] include: expected a file name or a list of them", field="rules.include")
    parts: list[tuple[str, dict[str, Any]]] = []
    for name in includes:
        file = base / name
        data = _read_toml(file)
        load_rules(data, source=str(file))  # validate on its own: errors name the included file
        parts.append((str(file), data))
    inline = {k: v for k, v in table.items() if k != "include"}
    if inline:
        load_rules(inline, source=f"{source}: [rules]")
        parts.append((f"{source}: [rules]", inline))
    if not parts:
        return None
    if len(parts) == 1:
        return load_rules(parts[0][1], source=parts[0][0])
    merged: dict[str, Any] = {"settings": {}, "filters": [], "rules": []}
    for _, part in parts:
        merged["settings"].update(part.get("settings", {}))
        merged["filters"].extend(part.get("filters", []))
        merged["rules"].extend(part.get("rules", []))
    return load_rules(merged, source=f"{source}: [rules] with {', '.join(includes)}")


def _threading_keys() -> list[str]:
    return [(f.alias or f.name.lstrip("_")) for f in attrs.fields(ThreadingOptions) if f.init]


def _threading(table: Mapping[str, Any], source: str) -> ThreadingOptions:
    check_keys(table, _threading_keys(), source, "threading")
    return load_threading(table, source=source)


def _form_field(entry: object, source: str, index: int) -> FormField:
    where = f"forms.fields[{index}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{source}: [{where}]: expected a table", field=where)
    known = [f.name for f in attrs.fields(FormField)]
    check_keys(entry, known, source, where)
    try:
        return FormField(**dict(entry))
    except ConfigError as exc:
        raise ConfigError(f"{source}: [{where}]: {exc.message}", field=where) from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: [{where}]: {exc}", field=where) from exc


def _form(table: Mapping[str, Any], source: str) -> Form:
    """`[forms]`: fields added to the default form (a field of the same name replaces it), or alone."""
    check_keys(table, FORMS_KEYS, source, "forms")
    replace = expect(table.get("replace", False), (bool,), source, "forms.replace", "true or false")
    expect(table.get("ignore_unknown_fields", False), (bool,), source, "forms.ignore_unknown_fields", "true or false")
    entries = table.get("fields", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: [forms] fields: expected an array of tables ([[forms.fields]])", field="fields")
    fields = [_form_field(entry, source, i) for i, entry in enumerate(entries)]
    return build_form(fields, replace=replace, source=source)


def build_form(fields: Iterable[FormField], *, replace: bool = False, source: str = "<form>") -> Form:
    """The default form with `fields` added; only `fields` when `replace`.

    A field named like one of the default form's (`phone`, `notes`) replaces it.

    Raises:
        ConfigError: A field is defined twice, or redefines a core ticket field.
    """
    own = list(fields)
    names = [f.name for f in own]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ConfigError(f"{source}: form field {name!r} is defined twice", field=name)
    base = [] if replace else [f for f in Form.default().fields if f.name not in names]
    try:
        return Form((*base, *own))
    except ConfigError as exc:
        raise ConfigError(f"{source}: [forms] {exc.message}", field=exc.field) from exc


def _limits(table: Mapping[str, Any], source: str) -> Limits:
    known = [f.name for f in attrs.fields(Limits)]
    if "allowed_types" in table:
        raise ConfigError(
            f"{source}: [limits] allowed_types: set the types in [attachments] allowed_types, which drops a "
            "refused file and keeps the ticket",
            field="limits.allowed_types",
        )
    check_keys(table, [k for k in known if k != "allowed_types"] + ["email"], source, "limits")
    try:
        return Limits(**dict(table))
    except ConfigError as exc:
        raise ConfigError(f"{source}: [limits] {exc.message}", field="limits") from exc
    except TypeError as exc:
        raise ConfigError(f"{source}: [limits] {exc}", field="limits") from exc


def _email_options(table: object, source: str) -> EmailOptions:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: [limits.email]: expected a table", field="limits.email")
    known = [f.name for f in attrs.fields(EmailOptions) if f.init]
    check_keys(table, known, source, "limits.email")
    try:
        return EmailOptions(**dict(table))
    except (ConfigError, TypeError, ValueError) as exc:
        text = exc.message if isinstance(exc, ConfigError) else str(exc)
        raise ConfigError(f"{source}: [limits.email] {text}", field="limits.email") from exc


def _alerts(table: Mapping[str, Any] | None, source: str) -> Any:
    if table is None:
        return None
    from ticketmail.alerts import alert_settings_from_table

    try:
        return alert_settings_from_table(table, source=source)
    except ConfigError as exc:
        message = exc.message if exc.message.startswith(source) else f"{source}: [alerts] {exc.message}"
        raise ConfigError(message, field=exc.field) from exc


def _poller(table: Mapping[str, Any], source: str) -> dict[str, float]:
    settings = dict(POLLER_DEFAULTS)
    check_keys(table, list(settings), source, "poller")
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{source}: poller.{key} must be a number >= 0, got {value!r}", field=f"poller.{key}")
        if key == "concurrency" and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"{source}: poller.{key} must be an integer >= 1, got {value!r}", field=f"poller.{key}")
        settings[key] = float(value)
    return settings
