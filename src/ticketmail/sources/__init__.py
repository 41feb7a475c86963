"""Mailbox sources: IMAP, POP3, Maildir, mbox, stdin pipe. Thin adapters around the pipeline.

OWNER: the sources work (issue 6); local files (`local.py`) come with the pipeline work (issue 5).
"""
