"""Moves files in and out of a box: a file written from memory, a local directory uploaded, a result downloaded.

python examples/files.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import boxyard


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp, boxyard.Client() as client:
        project = Path(tmp) / "project"
        project.mkdir()
        (project / "numbers.txt").write_text("\n".join(str(i) for i in range(1, 101)) + "\n")

        with client.boxes.create(labels={"example": "files"}) as box:
            box.files.write(
                "/work/job.sh", "sum=0; while read n; do sum=$((sum+n)); done < project/numbers.txt; echo $sum\n"
            )
            uploaded = box.files.upload(project, "/work")  # -> /work/project/numbers.txt
            print(f"uploaded {uploaded.entries} entries, {uploaded.bytes} bytes")

            result = box.run("sh job.sh > result.txt && cat result.txt", cwd="/work")
            print("sum computed in the box:", result.stdout.strip())
            print("read back:", box.files.read("/work/result.txt").decode().strip())

            out = Path(tmp) / "out"
            for path in box.files.download("/work", out):
                print("downloaded", path.relative_to(out))
            return 0 if (out / "work" / "result.txt").read_text().strip() == "5050" else 1


if __name__ == "__main__":
    raise SystemExit(main())
