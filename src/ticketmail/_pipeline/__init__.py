"""The stages behind `ticketmail.pipeline.Pipeline`, one responsibility per module.

Read them in the order a message meets them:

* `outcome`: what processing one message did (`Outcome`, `ProcessingError`, `ledger_key()`).
* `config`: the pipeline's settings and the small services every stage uses (clock, rules, numbers, tokens).
* `prepare`: the pure work before the transaction (argument checks, parsing, duplicate keys, threading
  candidates, the attachment policy).
* `email_effect`: the unit-of-work effect of one email, as a table of named steps.
* `request_effect`: the unit-of-work effect of one API request.
* `content`: what a committed message stores (a new ticket's fields, entries, recipients as participants).
* `ledger`: the last writes of every committed message (ledger rows, the audit record) and the hooks after it.
* `failures`: failed messages (quarantine in a unit of their own) and the quarantine administration.
* `capabilities`: the optional capabilities of a backend or unit of work, as `Protocol`s.

Nothing here is public: import the names from `ticketmail.pipeline`.
"""
