import sys

from composecache.cli import main

sys.exit(main())
