"""python -m service.cli INPUT... -o OUTDIR (the `derain` command)"""

import sys

from service.cli.command import main

sys.exit(main())
