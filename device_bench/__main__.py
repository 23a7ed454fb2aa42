"""`python -m featherface.bench BUNDLE_OR_FILE ...`: the bench with only the SDK installed."""
import sys

from .cli import main

sys.exit(main())
