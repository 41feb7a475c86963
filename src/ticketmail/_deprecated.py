"""Names that moved keep working from their old module for one release, with a `DeprecationWarning`.

A module whose public name moved declares, at its end:

```python
__getattr__ = moved(__name__, {"OldName": "ticketmail.new.place:NewName"})
```

Reading `old_module.OldName` (or `from old_module import OldName`) then imports the new place, warns once
per access with the new import path, and returns the object, so users' code runs unchanged while it tells
them where to import from. The names are listed in the changelog's deprecations.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping

__all__ = ["moved"]


def moved(module: str, targets: Mapping[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` that resolves each old name in `targets` (`"package.module:name"`) with a warning."""

    def __getattr__(name: str) -> object:
        target = targets.get(name)
        if target is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        where, _, attribute = target.partition(":")
        attribute = attribute or name
        warnings.warn(
            f"{module}.{name} moved: import {attribute} from {where} (the old name goes in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(where), attribute)

    return __getattr__
