"""Blocking facades for scripts: the asyncio clients run on an event loop in a background thread.

``EventLoopThread`` is shared plumbing (one daemon thread running one loop; ``run(coro)``
blocks for the result). ``SyncProducer`` comes first; the consumer and admin facades follow
below it in this file.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence

from client.producer import Producer, RecordHandle, RecordMetadata


class EventLoopThread:
    """A private event loop in a daemon thread; ``run`` executes a coroutine there and waits."""

    def __init__(self, name: str = "brokerlab-client") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.close()

    def submit(self, coro: Awaitable[Any]) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Awaitable[Any], timeout: float | None = None) -> Any:
        if threading.current_thread() is self._thread:
            raise RuntimeError("a blocking client call from inside its own event loop would deadlock")
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join()


async def _await_handle(handle: RecordHandle) -> RecordMetadata:
    return await handle


class SyncRecordHandle:
    """A ``concurrent.futures.Future``-like view of one send: ``result(timeout)`` blocks."""

    __slots__ = ("_handle", "_runner")

    def __init__(self, handle: RecordHandle, runner: EventLoopThread) -> None:
        self._handle = handle
        self._runner = runner

    @property
    def topic(self) -> str:
        return self._handle.topic

    @property
    def partition(self) -> int:
        return self._handle.partition

    def done(self) -> bool:
        return self._handle.done()

    def result(self, timeout: float | None = None) -> RecordMetadata:
        """RecordMetadata once acknowledged; raises its KafkaError, or TimeoutError."""
        if self._handle.done():
            return self._handle.result()
        return self._runner.run(_await_handle(self._handle), timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            self.result(timeout)
        except concurrent.futures.TimeoutError:
            raise
        except Exception as exc:
            return exc
        return None

    def add_done_callback(self, callback: Callable[["SyncRecordHandle"], Any]) -> None:
        """``callback(handle)`` on completion; it runs in the client's loop thread."""
        self._runner.loop.call_soon_threadsafe(self._handle.add_done_callback, lambda _h: callback(self))


class SyncProducer:
    """``Producer`` with blocking methods; same arguments. ``send`` returns a SyncRecordHandle."""

    def __init__(self, bootstrap: str | Sequence[str], **options: Any) -> None:
        self._runner = EventLoopThread("brokerlab-producer")
        try:
            self._producer: Producer = self._runner.run(self._start(bootstrap, options))
        except BaseException:
            self._runner.stop()
            raise
        self._closed = False

    @staticmethod
    async def _start(bootstrap, options) -> Producer:
        producer = Producer(bootstrap, **options)
        await producer.start()
        return producer

    def __enter__(self) -> "SyncProducer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def send(
        self,
        topic: str,
        value: Any,
        key: Any = None,
        partition: int | None = None,
        headers: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
        timestamp_ms: int | None = None,
    ) -> SyncRecordHandle:
        handle = self._runner.run(self._producer.send(topic, value, key, partition, headers, timestamp_ms))
        return SyncRecordHandle(handle, self._runner)

    def flush(self, timeout: float | None = None) -> None:
        self._runner.run(self._producer.flush(), timeout)

    def close(self, timeout: float | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._runner.run(self._producer.close(None if timeout is None else int(timeout * 1000)))
        finally:
            self._runner.stop()


# ---- consumer and admin -----------------------------------------------------------------------
# (imported here, not at the top, to keep this section apart from the producer's)
from brokerlab.ids import TopicPartition  # noqa: E402
from client.admin import Admin, ClusterDescription, NewTopic, TopicDescription  # noqa: E402
from client.consumer import Consumer, ConsumerRecord  # noqa: E402


class SyncConsumer:
    """``Consumer`` with blocking methods; same arguments. Usable as a context manager."""

    def __init__(self, bootstrap: str | Sequence[str], **options: Any) -> None:
        self._runner = EventLoopThread("brokerlab-consumer")
        try:
            self._consumer: Consumer = self._runner.run(self._make(bootstrap, options))
        except BaseException:
            self._runner.stop()
            raise
        self._closed = False

    @staticmethod
    async def _make(bootstrap, options) -> Consumer:
        return Consumer(bootstrap, **options)

    def __enter__(self) -> "SyncConsumer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _on_loop(self, method: Callable[..., Any], *args: Any) -> Any:
        """Run a plain method on the loop thread (it may start the consumer's tasks)."""

        async def call():
            return method(*args)

        return self._runner.run(call())

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        self._on_loop(self._consumer.assign, list(partitions))

    def assignment(self) -> set[TopicPartition]:
        return self._on_loop(self._consumer.assignment)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._on_loop(self._consumer.seek, tp, offset)

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self._runner.run(self._consumer.seek_to_beginning(*partitions))

    def seek_to_end(self, *partitions: TopicPartition) -> None:
        self._runner.run(self._consumer.seek_to_end(*partitions))

    def position(self, tp: TopicPartition) -> int:
        return self._runner.run(self._consumer.position(tp))

    def high_watermark(self, tp: TopicPartition) -> int:
        return self._on_loop(self._consumer.high_watermark, tp)

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> list[ConsumerRecord]:
        return self._runner.run(self._consumer.poll(timeout_ms, max_records))

    # Consumer groups. Rebalance callbacks run on the client's loop thread, inside poll(): they
    # must not call this SyncConsumer (that would deadlock; it raises instead).
    def subscribe(self, topics: Iterable[str] | None = None, **options: Any) -> None:
        self._on_loop(lambda: self._consumer.subscribe(None if topics is None else list(topics), **options))

    def subscription(self) -> set[str]:
        return self._on_loop(self._consumer.subscription)

    def commit(self, offsets: dict | None = None, timeout_ms: int | None = None) -> None:
        self._runner.run(self._consumer.commit(offsets, timeout_ms))

    def commit_async(self, offsets: dict | None = None, callback: Callable[..., Any] | None = None) -> None:
        self._on_loop(self._consumer.commit_async, offsets, callback)

    def committed(self, partitions: Iterable[TopicPartition]) -> dict:
        return self._runner.run(self._consumer.committed(list(partitions)))

    def pause(self, *partitions: TopicPartition) -> None:
        self._on_loop(self._consumer.pause, *partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._on_loop(self._consumer.resume, *partitions)

    def paused(self) -> set[TopicPartition]:
        return self._on_loop(self._consumer.paused)

    def group_metadata(self) -> dict:
        return self._on_loop(self._consumer.group_metadata)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._runner.run(self._consumer.close())
        finally:
            self._runner.stop()


class SyncAdmin:
    """``Admin`` with blocking methods; same arguments. Usable as a context manager."""

    def __init__(self, bootstrap: str | Sequence[str], **options: Any) -> None:
        self._runner = EventLoopThread("brokerlab-admin")
        self._admin = Admin(bootstrap, **options)
        self._closed = False

    def __enter__(self) -> "SyncAdmin":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def create_topics(self, topics: Sequence[NewTopic], **options: Any) -> dict:
        return self._runner.run(self._admin.create_topics(topics, **options))

    def delete_topics(self, names: Iterable[str], **options: Any) -> dict:
        return self._runner.run(self._admin.delete_topics(list(names), **options))

    def list_topics(self, **options: Any) -> list[str]:
        return self._runner.run(self._admin.list_topics(**options))

    def describe_topics(self, names: Iterable[str] | None = None) -> list[TopicDescription]:
        return self._runner.run(self._admin.describe_topics(None if names is None else list(names)))

    def wait_for_topics(self, names: Iterable[str], timeout_ms: int = 10_000) -> None:
        self._runner.run(self._admin.wait_for_topics(list(names), timeout_ms))

    def describe_cluster(self) -> ClusterDescription:
        return self._runner.run(self._admin.describe_cluster())

    def list_groups(self, states: Iterable[str] = ()) -> list:
        return self._runner.run(self._admin.list_groups(list(states)))

    def describe_groups(self, group_ids: Iterable[str]) -> list:
        return self._runner.run(self._admin.describe_groups(list(group_ids)))

    def list_group_offsets(self, group_id: str, partitions: Iterable[TopicPartition] | None = None) -> dict:
        return self._runner.run(self._admin.list_group_offsets(group_id, partitions))

    def alter_group_offsets(self, group_id: str, offsets: dict) -> None:
        self._runner.run(self._admin.alter_group_offsets(group_id, offsets))

    def delete_groups(self, group_ids: Iterable[str], **options: Any) -> dict:
        return self._runner.run(self._admin.delete_groups(list(group_ids), **options))

    def list_offsets(self, specs: dict) -> dict:
        return self._runner.run(self._admin.list_offsets(specs))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._runner.run(self._admin.close())
        finally:
            self._runner.stop()
