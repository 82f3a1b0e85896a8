import sys

from brainseg3d.cli import main

sys.exit(main())
