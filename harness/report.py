"""``python -m harness.report``: see :mod:`harness.reporting.report`."""

import sys

from harness.core.usage import run_command
from harness.reporting import report as command

main = command.main  # harness.report.main(argv): the report without the --help wrapper

USAGE = (
    "usage: python -m harness.report [tag=T | sweep=ID [param=KEY] "
    "| study=NAME storage=URL] [paths.results=DIR] [out=PNG]"
)

if __name__ == "__main__":
    sys.exit(run_command(command, USAGE))
