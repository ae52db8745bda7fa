import sys

from tunevl.cli import main

sys.exit(main())
