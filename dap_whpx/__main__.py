import sys

from dap_whpx.server import main

sys.exit(main())
