"""The transparent docker / docker-compose shims: their scripts, and installing them."""
