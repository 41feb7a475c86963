"""A pytest plugin (entry point `pytest11`) that makes the shipped test helpers explain their failures.

pytest rewrites `assert` statements only in test modules, conftest files and modules registered before they
are imported. The conformance suite and the pipeline machine live in an installed package, so without this
registration a failing check in a user's project would say only `AssertionError`. Registering them here,
when pytest starts, gives the user the same introspection (the values compared) as the project's own tests.
Importing this module costs nothing else: it does not import the helpers themselves.
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite(
    "ticketmail.testing.conformance",
    "ticketmail.testing.pipeline_suite",
    "ticketmail.testing.strategies",
)
