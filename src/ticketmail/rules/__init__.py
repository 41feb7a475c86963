"""Decision rules: filters, automatic-mail detection, loop protection, duplicates, routing.

Pure functions over the parsed models; no I/O, no clock of their own. The contract used by the pipeline
and the CLI:

```python
load_rules(data: Mapping[str, Any], *, source: str = "<dict>") -> RuleSet      # raises ConfigError
load_rules_file(path: str | os.PathLike[str]) -> RuleSet                        # TOML
classify_automatic(email: InboundEmail) -> Automatic | None
evaluate(message: InboundEmail | TicketRequest, rules: RuleSet, *, context: MailboxContext,
         now: datetime, lookups: Lookups | None = None) -> Decision
duplicate_keys(message, *, scope: str, context: MailboxContext) -> tuple[str, ...]
outgoing_headers(kind, *, loop_token=None) -> dict[str, str]
never_autorespond(address: str) -> bool
```

`Lookups` is a Protocol with `count_tickets_by_requester(email, since) -> int` (the pipeline passes
its unit of work) for the per-sender rate limit. See docs/rules.md.
"""

from __future__ import annotations

from ticketmail.rules.automatic import SWITCHABLE_SIGNALS, classify_automatic, is_reporter_address
from ticketmail.rules.config import (
    AUTOMATIC_DEFAULTS,
    RateLimit,
    RulesConfigError,
    RuleSet,
    load_rules,
    load_rules_file,
)
from ticketmail.rules.duplicates import duplicate_keys, fingerprint
from ticketmail.rules.evaluate import Lookups, evaluate
from ticketmail.rules.filters import Filter
from ticketmail.rules.loops import LOOP_HEADER, never_autorespond, outgoing_headers
from ticketmail.rules.routing import Actions, Condition, Rule, regex_problem

__all__ = [
    "AUTOMATIC_DEFAULTS",
    "LOOP_HEADER",
    "Actions",
    "Condition",
    "Filter",
    "Lookups",
    "RateLimit",
    "Rule",
    "RuleSet",
    "RulesConfigError",
    "SWITCHABLE_SIGNALS",
    "classify_automatic",
    "duplicate_keys",
    "evaluate",
    "fingerprint",
    "is_reporter_address",
    "load_rules",
    "load_rules_file",
    "never_autorespond",
    "outgoing_headers",
    "regex_problem",
]
