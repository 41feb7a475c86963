"""ticketmail: turn inbound email and HTTP API payloads into helpdesk tickets.

The public API is re-exported here; ``__all__`` is sorted and pinned by a test.
"""

from __future__ import annotations

from ticketmail.errors import *  # noqa: F403
from ticketmail.errors import __all__ as _errors_all
from ticketmail.model import *  # noqa: F403
from ticketmail.model import __all__ as _model_all

__version__ = "0.1.0"

__all__ = sorted([*_errors_all, *_model_all])
