from brokerlab.disk import MemoryDisk
from node.log.offset_index import OffsetIndex
from node.log.time_index import TimeIndex


def test_offset_index_lookup_is_the_last_entry_at_or_before_the_offset():
    disk = MemoryDisk()
    index = OffsetIndex(disk.open("p/0.index"), 100)
    for offset, position in [(110, 500), (125, 1200), (140, 2000)]:
        index.append(offset, position)
    assert index.lookup(100) == 0  # before the first entry: the segment start
    assert index.lookup(109) == 0
    assert index.lookup(110) == 500
    assert index.lookup(124) == 500
    assert index.lookup(125) == 1200
    assert index.lookup(10_000) == 2000
    assert index.last_entry() == (140, 2000)


def test_offset_index_persists_fixed_width_entries_and_loads_them_back():
    disk = MemoryDisk()
    index = OffsetIndex(disk.open("p/0.index"), 100)
    index.append(110, 500)
    index.append(125, 1200)
    assert disk.file_bytes("p/0.index") == b""  # entries reach the file on flush
    index.sync()
    assert disk.file_bytes("p/0.index") == bytes.fromhex("0000000a000001f4" "00000019000004b0")
    loaded = OffsetIndex.load(disk.open("p/0.index"), 100)
    assert loaded.entries() == [(110, 500), (125, 1200)]


def test_offset_index_truncation_cuts_the_file_too():
    disk = MemoryDisk()
    index = OffsetIndex(disk.open("p/0.index"), 0)
    for i in range(1, 6):
        index.append(i * 10, i * 100)
    index.sync()
    index.truncate_to_offset(30)
    assert index.entries() == [(10, 100), (20, 200)]
    assert len(disk.file_bytes("p/0.index")) == 16
    index.append(25, 250)
    index.truncate_to_position(250)
    assert index.entries() == [(10, 100), (20, 200)]


def test_malformed_offset_index_files_are_refused():
    disk = MemoryDisk()
    disk.open("a.index").append(b"\x00" * 7)  # not a whole entry
    assert OffsetIndex.load(disk.open("a.index"), 0) is None
    disk.open("b.index").append(bytes.fromhex("00000002000000100000000100000020"))  # offsets go down
    assert OffsetIndex.load(disk.open("b.index"), 0) is None


def test_time_index_keeps_increasing_timestamps_and_answers_where_to_start():
    disk = MemoryDisk()
    index = TimeIndex(disk.open("p/0.timeindex"), 0)
    index.maybe_append(1_000, 9)
    index.maybe_append(900, 19)  # not a new maximum: ignored
    index.maybe_append(2_000, 29)
    assert index.entries() == [(1_000, 9), (2_000, 29)]
    assert index.lookup(500) == 0
    assert index.lookup(1_000) == 9
    assert index.lookup(1_999) == 9
    assert index.lookup(5_000) == 29
    index.sync()
    loaded = TimeIndex.load(disk.open("p/0.timeindex"), 0, next_offset=30)
    assert loaded.entries() == [(1_000, 9), (2_000, 29)]
    # An entry pointing past the segment's end means the index is stale.
    assert TimeIndex.load(disk.open("p/0.timeindex"), 0, next_offset=20) is None
    loaded.truncate_to_offset(20)
    assert loaded.entries() == [(1_000, 9)]
    assert len(disk.file_bytes("p/0.timeindex")) == 12
