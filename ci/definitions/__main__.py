"""`python -m ci.definitions schema [--write]`: print the JSON Schema of container.yaml, or write it to schemas/."""

from __future__ import annotations

import sys

from ci.definitions.schema import SCHEMA_FILE, schema_text


def main(argv: list[str]) -> int:
    if argv[:1] != ["schema"] or argv[1:] not in ([], ["--write"]):
        sys.stderr.write("usage: python -m ci.definitions schema [--write]\n")
        return 2
    if argv[1:] == ["--write"]:
        SCHEMA_FILE.parent.mkdir(exist_ok=True)
        SCHEMA_FILE.write_text(schema_text(), encoding="utf-8")
        sys.stdout.write(f"wrote {SCHEMA_FILE}\n")
    else:
        sys.stdout.write(schema_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
