"""python -m service [--host H] [--port P]"""

import sys

from service.cli import main

sys.exit(main())
