import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from dlbook import data

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not beside the checkout")


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


@pytest.fixture
def offline_root(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBOOK_DATA", str(tmp_path / "root"))
    monkeypatch.setenv("DLBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DLBOOK_OFFLINE", "1")
    return tmp_path / "root"


def test_data_root_from_environment(offline_root):
    assert data.data_root() == offline_root.resolve()


def test_data_root_defaults_to_checkout(monkeypatch):
    monkeypatch.delenv("DLBOOK_DATA", raising=False)
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo / "chapters")
    assert data.data_root() == repo / "data"


def test_read_idx_plain_and_gzip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 4, 5))
    write_idx(tmp_path / "a", images)
    write_idx(tmp_path / "b.gz", images, compress=True)
    assert np.array_equal(data.read_idx(tmp_path / "a"), images)
    assert np.array_equal(data.read_idx(tmp_path / "b.gz"), images)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        data.read_idx(tmp_path / "bad")


def test_load_mnist_from_root(offline_root):
    folder = offline_root / "MNIST" / "raw"
    folder.mkdir(parents=True)
    write_idx(folder / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28)))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([3, 7]), compress=True)
    images, labels = data.load_mnist("test")
    assert images.shape == (2, 28, 28) and labels.tolist() == [3, 7]


def test_load_fashion_mnist_from_root(offline_root):
    folder = offline_root / "FashionMNIST" / "raw"
    folder.mkdir(parents=True)
    write_idx(folder / "train-images-idx3-ubyte.gz", np.full((3, 28, 28), 9), compress=True)
    write_idx(folder / "train-labels-idx1-ubyte", np.array([0, 9, 5]))
    images, labels = data.load_fashion_mnist("train")
    assert images.shape == (3, 28, 28) and images.dtype == np.uint8 and images.max() == 9
    assert labels.dtype == np.int64 and labels.tolist() == [0, 9, 5]
    assert data.FASHION_MNIST_CLASSES[9] == "Ankle boot"
    write_idx(folder / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28)))
    write_idx(folder / "t10k-labels-idx1-ubyte", np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        data.load_fashion_mnist("test")
    with pytest.raises(ValueError, match="unknown Fashion-MNIST split"):
        data.load_fashion_mnist("val")


def test_missing_fashion_mnist_raises_one_clear_error(offline_root):
    with pytest.raises(data.DataNotFoundError) as info:
        data.load_fashion_mnist("test")
    message = str(info.value)
    for part in ("Fashion-MNIST (test split)", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte", str(offline_root / "FashionMNIST" / "raw"),
                 "fashion-mnist.s3", "DLBOOK_DATA"):
        assert part in message


def test_missing_data_raises_one_clear_error(offline_root):
    with pytest.raises(data.DataNotFoundError) as info:
        data.load_mnist("train")
    message = str(info.value)
    for part in ("MNIST (train split)", "train-images-idx3-ubyte", str(offline_root / "MNIST" / "raw"),
                 "ossci-datasets", "DLBOOK_DATA"):
        assert part in message
    with pytest.raises(data.DataNotFoundError, match="tinyshakespeare.txt"):
        data.load_text("tinyshakespeare")
    with pytest.raises(data.DataNotFoundError, match="ind.cora.x"):
        data.load_planetoid("Cora")
    with pytest.raises(data.DataNotFoundError, match="ENZYMES_A.txt"):
        data.load_tudataset("ENZYMES")


def test_unknown_names(offline_root):
    with pytest.raises(ValueError, match="unknown MNIST split"):
        data.load_mnist("validation")
    with pytest.raises(ValueError, match="unknown text corpus"):
        data.load_text("wikitext")
    with pytest.raises(ValueError, match="unknown Planetoid"):
        data.load_planetoid("PubMedX")
    with pytest.raises(ValueError, match="not a TUDataset name"):
        data.load_tudataset("../etc")


def test_load_digits():
    images, labels = data.load_digits()
    assert images.shape == (1797, 8, 8) and labels.shape == (1797,)
    assert images.max() == 16 and set(labels.tolist()) == set(range(10))


def snapshot(folder: Path) -> dict:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@needs_shared
def test_link_tree_never_writes_into_source(tmp_path):
    before = snapshot(SHARED)
    made = data.link_tree(SHARED, tmp_path / "root")
    assert made and all(p.is_symlink() for p in made)
    assert (tmp_path / "root" / "MNIST" / "raw").is_symlink()
    assert (tmp_path / "root" / "text" / "tinyshakespeare.txt").is_symlink()
    assert data.link_tree(SHARED, tmp_path / "root") == []      # idempotent
    with pytest.raises(ValueError, match="outside"):
        data.link_tree(SHARED, SHARED / "sub")
    assert snapshot(SHARED) == before


@needs_shared
def test_real_loaders_offline_from_linked_copies(tmp_path, monkeypatch):
    before = snapshot(SHARED)
    data.link_tree(SHARED, tmp_path / "root")
    monkeypatch.setenv("DLBOOK_DATA", str(tmp_path / "root"))
    monkeypatch.setenv("DLBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DLBOOK_OFFLINE", "1")
    images, labels = data.load_mnist("test")
    assert images.shape == (10000, 28, 28) and np.bincount(labels)[0] == 980
    images, labels = data.load_mnist("train")
    assert images.shape == (60000, 28, 28) and abs(images.mean() / 255 - 0.1307) < 1e-3
    for split, n in (("train", 60000), ("test", 10000)):
        images, labels = data.load_fashion_mnist(split)
        assert images.shape == (n, 28, 28) and (np.bincount(labels) == n // 10).all()
    assert abs(data.load_fashion_mnist("train")[0].mean() / 255 - 0.2860) < 1e-3
    assert data.load_text("tinyshakespeare").startswith("First Citizen:")
    cora = data.load_planetoid("Cora")
    assert cora.num_nodes == 2708 and int(cora.train_mask.sum()) == 140
    enzymes = data.load_tudataset("ENZYMES")
    assert len(enzymes) == 600 and enzymes.num_classes == 6
    assert (tmp_path / "cache" / "TUDataset" / "ENZYMES" / "processed").is_dir()
    assert snapshot(SHARED) == before
    assert not any(p.name == "processed" for p in (tmp_path / "root").rglob("*") if not p.is_symlink())


def _tiny_mnist(folder: Path, n_train: int = 40, n_test: int = 6) -> None:
    """Train images whose pixel (0, 0) is the image's index, so splits can be traced."""
    folder.mkdir(parents=True)
    train = np.zeros((n_train, 28, 28)); train[:, 0, 0] = np.arange(n_train)
    test = np.zeros((n_test, 28, 28)); test[:, 0, 0] = 100 + np.arange(n_test)
    write_idx(folder / "train-images-idx3-ubyte", train)
    write_idx(folder / "train-labels-idx1-ubyte", np.arange(n_train) % 10)
    write_idx(folder / "t10k-images-idx3-ubyte", test)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.arange(n_test) % 10)


def test_mnist_splits_are_disjoint_and_stable(offline_root):
    _tiny_mnist(offline_root / "MNIST" / "raw")
    s = data.mnist_splits(n_val=10)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (30, 10, 6)
    assert s.x_train.shape == (30, 28, 28) and s.x_train.dtype.is_floating_point
    assert float(s.x_train.max()) <= 1.0 and s.y_train.dtype == torch_int64()
    ids = lambda x: set((x[:, 0, 0] * 255).round().int().tolist())   # noqa: E731
    train, val = ids(s.x_train), ids(s.x_val)
    assert not train & val and len(train | val) == 40
    # the labels travel with their images
    assert ((s.x_train[:, 0, 0] * 255).round().long() % 10).tolist() == s.y_train.tolist()
    # validation images do not depend on how many training images are drawn
    small = data.mnist_splits(n_train=5, n_val=10)
    assert ids(small.x_val) == val and ids(small.x_train) <= train
    assert ids(data.mnist_splits(n_val=10, n_test=2).x_test) == {100, 101}
    assert ids(data.mnist_splits(n_val=10, seed=1).x_val) != val
    assert "train=30" in repr(s)


def test_mnist_splits_bad_input(offline_root):
    _tiny_mnist(offline_root / "MNIST" / "raw")
    with pytest.raises(ValueError, match="n_train must be in"):
        data.mnist_splits(n_train=31, n_val=10)
    with pytest.raises(ValueError, match="n_val must be in"):
        data.mnist_splits(n_val=40)
    with pytest.raises(ValueError, match="n_test must be in"):
        data.mnist_splits(n_val=10, n_test=7)
    with pytest.raises(ValueError, match="unknown dataset"):
        data.mnist_splits(dataset="cifar")
    with pytest.raises(data.DataNotFoundError):
        data.mnist_splits(dataset="fashion")


def torch_int64():
    import torch
    return torch.int64


# --- tabular loaders (chapter 20) -------------------------------------------

@needs_shared
def test_load_adult_and_compas_shapes(monkeypatch):
    monkeypatch.setenv("DLBOOK_DATA", str(SHARED))
    train, test = data.load_adult("train"), data.load_adult("test")
    assert train.shape == (32561, 15) and test.shape == (16281, 15)
    assert list(train.columns) == list(data.ADULT_COLUMNS)
    assert int(train["income"].sum()) == 7841 and int(test["income"].sum()) == 3846
    assert len(data.load_adult("train", drop_missing=True)) == 30162
    assert len(data.load_adult("test", drop_missing=True)) == 15060
    compas = data.load_compas()
    assert compas.shape == (7214, 53) and int(compas["two_year_recid"].sum()) == 3251


def test_missing_tabular_raises_clear_error(offline_root):
    with pytest.raises(data.DataNotFoundError, match="adult.data") as info:
        data.load_adult("train")
    assert str(offline_root / "tabular" / "adult") in str(info.value)
    with pytest.raises(data.DataNotFoundError, match="compas-scores-two-years.csv"):
        data.load_compas()
    with pytest.raises(ValueError, match="unknown Adult split"):
        data.load_adult("val")
