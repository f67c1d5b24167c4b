"""A text file's characters, as users have their text: UTF-8 (with or without Excel's byte-order mark),
UTF-16 with its byte-order mark (Windows' "Unicode" text), or either of them gzip-compressed
(`train.jsonl.gz`, as datasets are often shipped). Binary formats a user may take for text (Parquet,
Arrow, a zip) are named, with how to convert them, instead of failing as undecodable bytes."""
from __future__ import annotations

import codecs
import zlib
from pathlib import Path

from ..errors import InputError

MAX_BYTES = 256 * 2**20  # text is held and tokenised in memory: refuse files that cannot be meant for that
GZIP = b"\x1f\x8b"
# magic bytes of formats that are not text: what the file is, and how to get text from it
TO_JSONL = "datasets.Dataset.from_file(path).to_json('data.jsonl')"
BINARY = ((b"PAR1", "a Parquet file", "pandas.read_parquet(path).to_json('data.jsonl', orient='records', lines=True)"),
          (b"ARROW1", "an Arrow file", TO_JSONL),
          (b"\xff\xff\xff\xff", "an Arrow stream (a datasets cache file)", TO_JSONL),
          (b"PK\x03\x04", "a zip archive", "unzip it and name the text file inside"))


def format_suffix(path: Path) -> str:
    """The suffix that says how the text is laid out: `.jsonl` for `train.jsonl.gz` too, lower case."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def read_characters(path: Path) -> str:
    """The file's text; one line that says what is wrong (too large, not text, not decodable) otherwise."""
    if not path.is_file():
        raise InputError(f"{path}: no such text file")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise _too_large(path, size)
    raw = path.read_bytes()
    from ..foreign import LFS_FIX, LFS_POINTER

    if raw.startswith(LFS_POINTER):  # read as text, its three lines were three training examples
        raise InputError(f"{path} is a Git LFS pointer ({size} bytes), not the data: {LFS_FIX}")
    if raw.startswith(GZIP):
        raw = _gunzip(path, raw)
    for magic, what, how in BINARY:
        if raw.startswith(magic):
            raise InputError(f"{path}: {what}, not text; dpm reads plain text, JSON lines, a JSON array or CSV/TSV: "
                             f"convert it, e.g. {how}")
    return _decode(path, raw)


def _gunzip(path: Path, raw: bytes) -> bytes:
    """Every member (`cat a.gz b.gz` is one gzip file), inflated as a stream and cut at the limit: a small
    file that inflates to gigabytes must not fill the memory first."""
    out, rest = b"", raw
    while rest.startswith(GZIP):
        inflate = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
        try:
            out += inflate.decompress(rest, MAX_BYTES + 1 - len(out))
        except zlib.error as err:
            raise InputError(f"{path}: gzip-compressed but corrupt ({err}); compress it again or give the "
                             f"file uncompressed") from None
        if len(out) > MAX_BYTES or inflate.unconsumed_tail:
            raise _too_large(path, None)
        if not inflate.eof:
            raise InputError(f"{path}: gzip-compressed but cut short (the compressed stream has no end); "
                             f"copy or compress it again")
        rest = inflate.unused_data
    return out


def _decode(path: Path, raw: bytes) -> str:
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding, what = "utf-16", "UTF-16"
    else:
        encoding, what = "utf-8-sig", "UTF-8"  # -sig: a BOM (Excel) is no text
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not {what} text (byte {err.start}); save it as UTF-8") from None


def _too_large(path: Path, size: int | None) -> InputError:
    held = f"{size / 2**20:.0f} MiB is" if size is not None else "uncompressed, it is"
    return InputError(f"{path}: {held} more text than dpm reads into memory ({MAX_BYTES // 2**20} MiB); "
                      f"use a sample of it")
