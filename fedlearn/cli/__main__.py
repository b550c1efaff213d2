import sys

from fedlearn.cli.main import main

sys.exit(main())
