import sys

from zivmilter.cli import main

sys.exit(main())
