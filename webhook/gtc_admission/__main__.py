"""``python -m gtc_admission``: the same as the ``gtc-admission`` console script."""

from gtc_admission.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
