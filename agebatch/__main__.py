"""Allow `python -m agebatch ...` as an alias of the `agebatch` console script."""

from agebatch.cli import main

if __name__ == "__main__":
    main()
