"""Mailbox sources: IMAP, POP3, Microsoft Graph, Maildir, mbox, stdin pipe. Thin adapters around the pipeline.

Local files for `ticketmail ingest` are read by `local.py`; mail delivered by a mail server over LMTP or SMTP
is received by `ticketmail.receive`.
"""
