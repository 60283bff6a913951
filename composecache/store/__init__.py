"""The shared cache directory: layout, scopes, staging, publish, locks, gc, verify, stats.

No printing and no command line here: functions return data (see store.py for
the build-facing API and layout.py for what lives where).
"""

from composecache.store.staging import Staging
from composecache.store.store import ImportSpec, PublishOutcome, Store

__all__ = ["ImportSpec", "PublishOutcome", "Staging", "Store"]
