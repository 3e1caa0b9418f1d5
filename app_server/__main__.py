"""`python -m app_server` is `codex-limits serve`."""

from .cli import main

if __name__ == "__main__":
    main(["serve", *__import__("sys").argv[1:]])
