import sys

from convmetrics.cli import main

sys.exit(main())
