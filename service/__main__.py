"""python -m service [--host H] [--port P]"""

import sys

from service.http.server import main

sys.exit(main())
