"""``anomalib-medical``: anomalib's command line with anomalib-medical's classes imported explicitly.

The stock ``anomalib`` command finds our models and datamodules through the start-up hook installed
with the package (``anomalib_medical_autoload``). Where ``.pth`` hooks do not run (``python -S``,
embedded interpreters, ``ANOMALIB_MEDICAL_AUTOLOAD=0``) this command is the same CLI, with the same
subcommands and arguments.
"""

import anomalib_medical  # noqa: F401  (defines our subclasses before anomalib parses arguments)


def main() -> None:
    """Run anomalib's CLI (``anomalib.cli.cli.main``) with our classes registered."""
    from anomalib.cli.cli import main as anomalib_main

    anomalib_main()


if __name__ == "__main__":
    main()
