import sys

from fito.cli import main

sys.exit(main())
