import sys

from wattcast.cli import main

sys.exit(main())
