"""Micro-batching for the encoder: concurrent requests share one forward pass.

A transformer forward pass over 16 short queries costs little more than over one on a CPU, so under
load the server gathers texts that arrive within a few milliseconds and encodes them together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np


class EncodeBatcher:
    def __init__(self, encode: Callable[[list[str]], np.ndarray], max_batch: int = 32, max_wait_s: float = 0.003):
        self.encode = encode
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.queue: asyncio.Queue[tuple[list[str], asyncio.Future]] = asyncio.Queue()
        self.batches = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()

    async def __call__(self, texts: list[str]) -> np.ndarray:
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, future))
        return await future

    async def _run(self) -> None:
        while True:
            items = [await self.queue.get()]
            size = len(items[0][0])
            deadline = asyncio.get_running_loop().time() + self.max_wait_s
            while size < self.max_batch:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), timeout)
                except TimeoutError:
                    break
                items.append(item)
                size += len(item[0])
            texts = [t for item_texts, _ in items for t in item_texts]
            try:
                vectors = await asyncio.to_thread(self.encode, texts)
            except Exception as exc:  # hand the failure to every waiting request
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            offset = 0
            for item_texts, future in items:
                if not future.done():
                    future.set_result(vectors[offset : offset + len(item_texts)])
                offset += len(item_texts)
