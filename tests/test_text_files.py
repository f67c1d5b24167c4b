"""Text files as users have them: gzip-compressed, UTF-16, or a binary format taken for text.

Found by feeding `dpm prune` a `train.jsonl.gz` (refused as "not UTF-8 text (byte 1)"), a file saved as
"Unicode" on Windows (UTF-16 with its byte-order mark: "not UTF-8 text (byte 0)"), and a Parquet file.
"""
from __future__ import annotations

import codecs
import gzip
import json
import zipfile

import pytest

from dpm_cli.data import textfile
from dpm_cli.data.text import read_text
from dpm_cli.errors import InputError

RECORDS = [{"text": f"example number {i} of the set", "label": i % 3} for i in range(12)]


def jsonl() -> str:
    return "".join(json.dumps(r) + "\n" for r in RECORDS)


def expected():
    return [r["text"] for r in RECORDS], [r["label"] for r in RECORDS]


def test_gzip_compressed_json_lines_read_as_the_uncompressed_file(tmp_path):
    path = tmp_path / "train.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl().encode()))
    assert read_text(path) == expected()


def test_every_member_of_a_concatenated_gzip_is_read(tmp_path):
    text = jsonl().splitlines(keepends=True)
    path = tmp_path / "train.jsonl.gz"  # `cat a.jsonl.gz b.jsonl.gz > train.jsonl.gz`
    path.write_bytes(gzip.compress("".join(text[:5]).encode()) + gzip.compress("".join(text[5:]).encode()))
    assert read_text(path) == expected()


def test_a_gzip_csv_is_read_as_a_table_not_as_lines(tmp_path):
    rows = "text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in RECORDS)
    path = tmp_path / "train.CSV.gz"
    path.write_bytes(gzip.compress(rows.encode()))
    assert read_text(path) == expected()  # the header is not an example


def test_utf16_with_its_byte_order_mark_is_read(tmp_path):
    for bom, codec in ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        path = tmp_path / "train.jsonl"
        path.write_bytes(bom + jsonl().encode(codec))
        assert read_text(path) == expected()


def test_a_cut_gzip_is_one_line_that_says_so(tmp_path):
    path = tmp_path / "train.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl().encode())[:40])
    with pytest.raises(InputError, match="gzip-compressed but cut short"):
        read_text(path)


def test_a_corrupt_gzip_is_one_line_that_says_so(tmp_path):
    data = bytearray(gzip.compress(jsonl().encode()))
    data[3] = 0xE0  # reserved flag bits set: no gzip reader accepts the header
    path = tmp_path / "train.jsonl.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="gzip-compressed but corrupt"):
        read_text(path)


def test_a_small_gzip_that_inflates_past_the_limit_is_refused_without_inflating_it_all(tmp_path, monkeypatch):
    monkeypatch.setattr(textfile, "MAX_BYTES", 10_000)
    path = tmp_path / "bomb.txt.gz"
    path.write_bytes(gzip.compress(b"the same line again\n" * 50_000))  # 1 MB of text in about 3 KB
    assert path.stat().st_size < 10_000
    with pytest.raises(InputError, match="uncompressed, it is more text than dpm reads into memory"):
        read_text(path)
    # a second member is counted against the same limit
    half = gzip.compress(b"x\n" * 3_000)
    path.write_bytes(half + half)
    with pytest.raises(InputError, match="more text than dpm reads"):
        read_text(path)


@pytest.mark.parametrize("head, what, how", [
    (b"PAR1\x15\x04", "a Parquet file", "pandas.read_parquet"),
    (b"ARROW1\x00\x00", "an Arrow file", "datasets.Dataset.from_file"),
    (b"\xff\xff\xff\xff\x10\x01", "an Arrow stream", "datasets.Dataset.from_file"),
])
def test_binary_data_formats_are_named_with_how_to_convert_them(tmp_path, head, what, how):
    path = tmp_path / "train.data"
    path.write_bytes(head + bytes(range(256)))
    with pytest.raises(InputError, match=what) as err:
        read_text(path)
    assert how in str(err.value) and "not text" in str(err.value)


def test_a_zip_is_named_and_a_gzip_of_garbage_still_says_it_is_not_text(tmp_path):
    archive = tmp_path / "train.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("train.jsonl", jsonl())
    with pytest.raises(InputError, match="a zip archive, not text; .*unzip it"):
        read_text(archive)
    path = tmp_path / "train.txt.gz"
    path.write_bytes(gzip.compress(bytes([0x80, 0x81]) * 10))
    with pytest.raises(InputError, match=r"not UTF-8 text \(byte 0\); save it as UTF-8"):
        read_text(path)


class _Marker:
    """Unpickling this writes a file: proof that a data file was never unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


ESCAPE = "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}"  # a classic Jinja sandbox escape


@pytest.mark.parametrize("case", ["bomb", "cut", "pickle", "parquet", "zip", "chat-types", "chat-template"])
def test_hostile_data_files_through_dpm_prune_are_one_line_exit_2_nothing_run_or_written(case, tmp_path, capsys,
                                                                                        monkeypatch):
    import pickle

    pytest.importorskip("transformers")
    from cli_helpers import run_cli
    from hf_helpers import bert_folder, write_recipe

    marker = tmp_path / "ran"
    data = tmp_path / ("train.zip" if case == "zip" else "train.jsonl" if case.startswith("chat") else "train.jsonl.gz")
    folder = bert_folder(tmp_path / "bert")
    if case == "bomb":
        monkeypatch.setattr(textfile, "MAX_BYTES", 50_000)
        data.write_bytes(gzip.compress(jsonl().encode() * 2_000))
    elif case == "cut":
        data.write_bytes(gzip.compress(jsonl().encode())[:50])
    elif case == "pickle":  # a pickle, gzip-compressed, named as JSON lines
        data.write_bytes(gzip.compress(pickle.dumps(_Marker(marker))))
    elif case == "parquet":
        data.write_bytes(b"PAR1" + bytes(range(256)) + b"PAR1")
    elif case == "zip":
        with zipfile.ZipFile(data, "w") as z:
            z.writestr("train.jsonl", jsonl())
    else:  # chats: content of the wrong type; a chat template that tries to leave transformers' sandbox
        content = 3 if case == "chat-types" else "the python module"
        data.write_text((json.dumps({"messages": [{"role": "user", "content": content}]}) + "\n") * 4)
        config = json.loads((folder / "tokenizer_config.json").read_text())
        template = ESCAPE.replace("MARKER", str(marker))
        (folder / "tokenizer_config.json").write_text(json.dumps(dict(config, chat_template=template)))
    recipe = write_recipe(tmp_path, folder, data)
    capsys.readouterr()  # what building the folder printed (transformers' progress bar)
    code, out, err = run_cli(["prune", "-r", recipe], capsys)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("note:")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert str(data) in lines[0] or (case == "chat-template" and "chat template refused a conversation" in lines[0])
    assert not marker.exists() and not (tmp_path / "run").exists()
