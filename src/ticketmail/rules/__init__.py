"""Decision rules: filters, automatic-mail detection, loop protection, duplicates, routing.

OWNER: the rules work (issue 4). Pure functions over the parsed models; no I/O, no clock of their own.
Contract used by the pipeline and the CLI (keep these names and signatures)::

    load_rules(data: Mapping[str, Any], *, source: str = "<dict>") -> RuleSet      # raises ConfigError
    load_rules_file(path: str | os.PathLike[str]) -> RuleSet                        # TOML
    classify_automatic(email: InboundEmail) -> Automatic | None
    evaluate(message: InboundEmail | TicketRequest, rules: RuleSet, *, context: MailboxContext,
             now: datetime, lookups: Lookups | None = None) -> Decision
    duplicate_keys(message, *, scope: str, context: MailboxContext) -> tuple[str, ...]
    outgoing_headers(...) -> dict[str, str]

``Lookups`` is a Protocol with ``count_tickets_by_requester(email, since) -> int`` (the pipeline passes
its unit of work) for the per-sender rate limit.
"""
