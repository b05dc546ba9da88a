"""Shared memory, side by side: the owner's state machine and the attached side's registry.

Real segments throughout (memfd, and named ones as macOS and Windows use);
the attached side is exercised in a real spawned process where it must be
another process, and through this process's own descriptor table where
Linux allows it.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
from collections.abc import Iterator

import numpy as np
import pytest

from tilewise.sharedmem import (
    SharedArray,
    attached,
    clear_cache,
    live_segment_names,
    owner,
    segments,
)


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    clear_cache()
    yield
    clear_cache()


@pytest.fixture
def named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Named segments, the path of systems without memfd."""
    monkeypatch.setattr(segments, "USE_MEMFD", False)


def fill_in_child(shared: SharedArray, value: float) -> None:
    """A spawned process: unpickle the array (the attached side maps it) and write into it."""
    shared.array[:] = value
    attached.release_attached()


@pytest.mark.usefixtures("named")
def test_an_array_pickles_as_its_spec_and_another_process_writes_it_in_place() -> None:
    with SharedArray.create((300, 400), np.float64) as shared:
        shared.array[:] = 0
        assert len(pickle.dumps(shared)) < 1000  # the name and the layout, not 960 kB
        child = multiprocessing.get_context("spawn").Process(
            target=fill_in_child, args=(shared, 2.5)
        )
        child.start()
        child.join()
        assert child.exitcode == 0
        assert (shared.array == 2.5).all()


@pytest.mark.usefixtures("memfd")
def test_a_recycled_input_is_taken_by_the_next_array_of_its_size() -> None:
    first = SharedArray.copy_of(np.arange(12.0))
    name = first.name
    first.recycle()
    again = SharedArray.create((12,), np.float64)  # same bytes: the same segment
    other = SharedArray.create((13,), np.float64)  # other bytes: a new one
    try:
        assert again.name == name
        assert other.name != name
    finally:
        again.recycle()
        other.recycle()


@pytest.mark.usefixtures("memfd")
def test_a_handed_over_output_is_reused_only_once_its_array_is_gone() -> None:
    shared = SharedArray.create((64,), np.uint8)
    name = shared.name
    result = shared.hand_over()
    result[:] = 7
    with SharedArray.create((64,), np.uint8) as while_held:  # freed, not cached, at exit
        assert while_held.name != name  # the caller's array still lives in it
    del result
    gc.collect()
    after = SharedArray.create((64,), np.uint8)
    try:
        assert after.name == name
    finally:
        after.recycle()


@pytest.mark.usefixtures("memfd")
def test_memory_still_referenced_another_way_is_not_reused() -> None:
    shared = SharedArray.create((32,), np.uint8)
    name = shared.name
    result = shared.hand_over()
    kept = np.frombuffer(result.base, np.uint8)  # type: ignore[arg-type]
    del result
    gc.collect()
    again = SharedArray.create((32,), np.uint8)
    try:
        assert again.name != name
        assert kept.size >= 32
    finally:
        again.recycle()


def test_views_are_found_not_copied_and_copies_are_made_of_the_rest() -> None:
    with SharedArray.create((4, 6), np.int32) as shared:
        shared.array[:] = np.arange(24).reshape(4, 6)
        view = SharedArray.find(shared.array[1:, ::2])
        assert view is not None
        assert view.name == shared.name
        assert not view.owner
        np.testing.assert_array_equal(view.array, shared.array[1:, ::2])
        assert SharedArray.find(np.zeros((4, 6))) is None


@pytest.mark.usefixtures("memfd")
def test_live_names_are_the_memfd_segments_the_owner_still_holds() -> None:
    shared = SharedArray.create((8,), np.uint8)
    assert shared.name in live_segment_names()
    shared.recycle()
    clear_cache()
    assert shared.name not in live_segment_names()


@pytest.mark.usefixtures("memfd")
def test_the_attached_side_keeps_one_mapping_per_segment_until_released() -> None:
    shared = SharedArray.create((16,), np.float32)
    try:
        spec = shared.spec.segment
        attached.adopt(spec, os.dup(shared.segment.fd))  # as a worker receives it
        mapped = attached.attached_segment(spec)
        assert attached.attached_segment(spec) is mapped
        attached.release_attached(keep=frozenset({spec.name}))
        assert attached.attached_segment(spec) is mapped  # kept: the owner holds it
        attached.release_attached()
        with pytest.raises(RuntimeError, match="no descriptor received"):
            attached.attached_segment(spec)  # dropped; a memfd comes back only by descriptor
    finally:
        shared.recycle()


@pytest.mark.usefixtures("memfd")
def test_a_segment_held_through_its_owner_is_dropped_once_the_owner_lets_go() -> None:
    shared = SharedArray.create((1024,), np.uint8)
    shared.array[:] = 3
    spec = shared.held_spec().segment
    held = attached.held_segment(spec)
    assert attached.held_segment(spec) is held
    assert np.frombuffer(held.mapping, np.uint8)[:4].tolist() == [3, 3, 3, 3]
    assert spec.name not in attached.drop_released()  # the owner holds it still
    shared.recycle()
    clear_cache()  # the owner closes its descriptor
    assert spec.name in attached.drop_released()
    assert held not in attached.held_segments()


@pytest.mark.posix
def test_the_owner_registry_forgets_what_a_fork_inherits() -> None:
    # A forked child must not reuse, or hold on to, its parent's segments.
    shared = SharedArray.create((8,), np.uint8)
    try:
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(reader)
            found = SharedArray.find(shared.array)
            os.write(writer, b"none" if found is None else b"found")
            os._exit(0)
        os.close(writer)
        with os.fdopen(reader, "rb") as pipe:
            answer = pipe.read()
        os.waitpid(pid, 0)
        assert answer == b"none"
        assert owner.SharedArray.find(shared.array) is not None  # the parent's own
    finally:
        shared.recycle()
