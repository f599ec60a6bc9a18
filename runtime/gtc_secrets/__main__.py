"""``python -m gtc_secrets``: the same as the ``gtc-secrets`` console script."""

import sys

from gtc_secrets.cli import main

if __name__ == "__main__":
    sys.exit(main())
