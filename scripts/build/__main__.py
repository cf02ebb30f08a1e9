import sys

from scripts.build.artifacts import main

sys.exit(main())
