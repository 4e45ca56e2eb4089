"""The asyncio client: three commands run at once in one box.

python examples/async_hello.py
"""

from __future__ import annotations

import asyncio

import boxyard


async def main() -> int:
    async with boxyard.AsyncClient() as client, client.boxes.create(labels={"example": "async"}) as box:
        results = await asyncio.gather(*(box.run(f"sleep 0.5; echo job {i}") for i in range(3)))
        for r in results:
            print(r.stdout, end="")
        return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
