import sys

from csrl.cli.main import main

sys.exit(main())
