"""Entry point for spark-submit: `spark-submit ... scripts/submit_main.py train --run-root ...`."""
import sys

from sparkcnn.pipeline.cli.main import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
