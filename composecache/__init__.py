"""composecache: share one BuildKit build cache between many isolated Docker daemons."""

__version__ = "0.1.0"
