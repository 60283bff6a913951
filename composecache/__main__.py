from composecache.cli import console

console()
