"""``python -m dlkdd`` (and ``torchrun -m dlkdd``) runs the CLI."""
from dlkdd.cli import main

if __name__ == "__main__":
    main()
