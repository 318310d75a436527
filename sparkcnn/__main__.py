"""`python -m sparkcnn`: the sparkcnn command."""
import sys

from sparkcnn.pipeline.cli.main import main

sys.exit(main())
