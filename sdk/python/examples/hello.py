"""Runs a command in a new box and prints its output.

    BOXYARD_URL=http://127.0.0.1:8080 BOXYARD_KEY=byk_... python examples/hello.py

(Without BOXYARD_URL/BOXYARD_KEY the CLI's default profile is used, e.g. the one `boxyard dev up` writes.)
"""

from __future__ import annotations

import boxyard


def main() -> int:
    with boxyard.Client() as client, client.boxes.create(labels={"example": "hello"}) as box:
        result = box.run("echo Hello from $(uname -n); echo this goes to stderr >&2; exit 7")
        print("stdout:", result.stdout, end="")
        print("stderr:", result.stderr, end="")
        print("exit code:", result.exit_code)
        return 0 if result.exit_code == 7 else 1


if __name__ == "__main__":
    raise SystemExit(main())
