"""The docker command line: docker build / buildx build with the cache, `docker compose` via the shim, Compose v1."""
