"""`python -m ticketmail`: the console script."""

from ticketmail.cli import main

raise SystemExit(main())
