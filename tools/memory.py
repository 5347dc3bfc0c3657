"""Counting live CPU tensor memory, for the tests that check a long video leaves nothing behind per block."""

from __future__ import annotations

import gc
import weakref

import torch


def _storage_bytes(tensors, seen: set[int]) -> int:
    total = 0
    for obj in tensors:
        try:
            if type(obj) is torch.Tensor and obj.device.type == "cpu":
                storage = obj.untyped_storage()
                if storage.data_ptr() not in seen:
                    seen.add(storage.data_ptr())
                    total += storage.nbytes()
        except Exception:  # noqa: BLE001 (objects that only look like tensors)
            continue
    return total


class LiveCpuTensors:
    """The bytes of every live CPU tensor's storage, each storage once: what a walk of `gc.get_objects()` after
    `gc.collect()` counts, made cheap enough to count at every block.

    A full collection and walk cost time in proportion to every object of the process (0.3-0.7 s each in the test
    suite, where ComfyUI is imported). Inside `with LiveCpuTensors() as live:` the objects that existed on entry
    are frozen (`gc.freeze`), so `live.bytes()` collects and walks only the objects made since; the tensors that
    existed on entry are held by weak reference and counted too while they live, at their storage's current
    size (a storage resized in place still counts its new size). The total is the full walk's: a tensor made
    during the run and kept is new, so it is walked. The one difference: garbage among the frozen objects (a
    reference cycle that was alive on entry and dies inside) is not collected until the block ends, so it stays
    counted; it cannot grow, since nothing made inside is frozen."""

    def __enter__(self) -> "LiveCpuTensors":
        gc.collect()
        self._before = [weakref.ref(o) for o in gc.get_objects() if type(o) is torch.Tensor]
        gc.freeze()
        return self

    def __exit__(self, *exc) -> None:
        gc.unfreeze()
        self._before = []

    def bytes(self) -> int:
        gc.collect()
        seen: set[int] = set()
        return _storage_bytes((r() for r in self._before), seen) + _storage_bytes(gc.get_objects(), seen)
