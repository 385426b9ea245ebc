"""python -m service [--host H] [--port P]"""

import sys

from service.server import main

sys.exit(main())
