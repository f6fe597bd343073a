"""``python -m vgglocal`` (used by torchrun) is the command line."""

from vgglocal.cli import main

if __name__ == "__main__":
    main()
