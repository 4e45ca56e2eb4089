"""Streams a command's output as it is written, with callbacks, then with an execution handle and its input.

python examples/stream.py
"""

from __future__ import annotations

import sys

import boxyard


def main() -> int:
    with boxyard.Client() as client, client.boxes.create(labels={"example": "stream"}) as box:
        # 1. Callbacks get text as it arrives (a multi-byte character split between two chunks arrives whole).
        result = box.run(
            'for i in 1 2 3; do echo "tick $i ✓"; sleep 0.2; done; echo done >&2',
            on_stdout=lambda text: print(f"[out] {text}", end="", flush=True),
            on_stderr=lambda text: print(f"[err] {text}", end="", file=sys.stderr, flush=True),
        )
        print(f"exit code {result.exit_code}, {len(result.stdout_bytes)} bytes of stdout")

        # 2. An execution handle: send input, iterate over output chunks (stream, data, cursor), then wait.
        with box.exec(["sh", "-c", 'while read line; do echo "echo: $line"; done'], stdin=True) as ex:
            for word in ("alpha", "beta", "gamma"):
                ex.send_stdin(word + "\n")
            ex.close_stdin()
            for chunk in ex:
                print(f"[{chunk.stream} @{chunk.cursor}] {chunk.data.decode()}", end="")
            print("exit code", ex.wait().exit_code)
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
