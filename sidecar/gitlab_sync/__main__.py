import sys

from gitlab_sync.cli import main

sys.exit(main())
