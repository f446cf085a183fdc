import sys

from asciiray.cli import main

sys.exit(main())
