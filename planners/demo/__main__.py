import sys

from .release import main

sys.exit(main())
