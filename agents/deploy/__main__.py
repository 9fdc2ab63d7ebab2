"""``python -m agents.deploy --policy FILE --robot URI``: ``kinodiff deploy`` without loading torch.

The ``kinodiff`` entry point builds every command's parser (and so imports the training stack);
a controller machine can run this module with only numpy and onnxruntime installed.
"""

from __future__ import annotations

import argparse
import sys

from agents.cli.dataclass_args import add_dataclass_args, build_config
from agents.deploy.session import DeployConfig, deploy, print_summary


def main(argv: list[str] | None = None) -> int:
    """Parse ``DeployConfig`` options, deploy, print the summary; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m agents.deploy", description=__doc__.splitlines()[0])
    add_dataclass_args(parser, DeployConfig)
    parser.add_argument("--json", default=None, help="write the loop statistics to this JSON file")
    args = parser.parse_args(argv)
    try:
        print_summary(deploy(build_config(DeployConfig, args)), args.json)
    except (ValueError, FileNotFoundError) as exc:
        print(f"kinodiff deploy: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
