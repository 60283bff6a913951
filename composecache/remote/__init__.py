"""The registry tier: an OCI registry shared by many hosts, behind each host's local store.

config.py (what `--remote` names), naming.py (scope -> tag), credentials.py (the
docker config, as buildx reads it), client.py (bounded HTTP with registry auth),
tier.py (what a build imports from and pushes to the registry), push.py (a
published local scope -> the registry, in a detached process).
"""
