import sys

from scripts.drills.runner import main

sys.exit(main())
