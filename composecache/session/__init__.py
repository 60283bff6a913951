"""This session's tools and daemon: what they can do, the session memo, seeding the daemon's content store."""
