"""`python -m tests.github_emulator [--port 8790]`: serve the emulated GitHub API until Ctrl-C.

Prints the URL and the token to use (CI_GITHUB_TOKEN); scenarios are driven with POST
/_emulator/runs etc. (see emulator.py).
"""

from __future__ import annotations

import argparse
import json

from .emulator import Emulator, GitHub


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--repository", default=GitHub().repository)
    parser.add_argument("--rate-limit", type=int, default=GitHub().limit, help="calls per hour (GitHub: 5000)")
    args = parser.parse_args()
    github = GitHub(repository=args.repository, limit=args.rate_limit, remaining=args.rate_limit)
    emulator = Emulator(github, port=args.port)
    print(json.dumps({"api_url": emulator.url, "repository": args.repository, "token_env": "CI_GITHUB_TOKEN",
                      "token": emulator.github.token}), flush=True)
    emulator.serve_until_signalled()


if __name__ == "__main__":
    main()
