import sys

from whpx_core.cli import main

sys.exit(main())
