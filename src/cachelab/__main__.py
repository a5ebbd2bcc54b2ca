import sys

from cachelab.cli import main

sys.exit(main())
