"""Reading text input: line-length limits that hold memory bounded whatever the input."""

from __future__ import annotations

import gzip
import io
import tracemalloc

from data_loaders.inputs import InputFile, LongLine, iter_lines_bounded, split_lines


def test_overlong_line_is_read_in_bounded_memory(tmp_path):
    # a 16 MiB line (a 90 MB four-line record took 4.3 GB before lines had a limit)
    for name, opener in (("big.csv", open), ("big.csv.gz", gzip.open)):
        p = tmp_path / name
        with opener(p, "wb") as fh:
            fh.write(b"short\n")
            fh.write(b"7," * (8 << 20))
            fh.write(b"\r\nlast")
        f = InputFile(name=str(p), path=p)
        tracemalloc.start()
        try:
            out = list(iter_lines_bounded(f, max_bytes=1 << 20))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert out[0] == (1, "short") and out[2] == (3, "last")
        lineno, long = out[1]
        assert lineno == 2 and isinstance(long, LongLine)
        assert long.size == 16 << 20 and long.preview().startswith("7,7,")
        assert peak < 4 << 20, f"{name}: {peak} bytes held for a 16 MiB line"
        assert long.detail.startswith("line is 16,777,216 bytes, longer than the limit")


def test_line_limit_boundaries():
    n = 10
    data = b"a" * n + b"\n" + b"b" * n + b"\r\n" + b"c" * (n + 1) + b"\n" + b"d" * n
    got = list(split_lines(io.BytesIO(data), n))
    assert got[0] == b"a" * n + b"\n" and got[1] == b"b" * n + b"\r\n"
    assert isinstance(got[2], LongLine) and got[2].size == n + 1
    assert got[3] == b"d" * n
    tail = list(split_lines(io.BytesIO(b"e" * (n + 5)), n))
    assert isinstance(tail[0], LongLine) and tail[0].size == n + 5
    crlf = list(split_lines(io.BytesIO(b"f" * (3 * n) + b"\r\nok\n"), n))
    assert isinstance(crlf[0], LongLine) and crlf[0].size == 3 * n and crlf[1] == b"ok\n"
