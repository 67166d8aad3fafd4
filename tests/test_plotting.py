import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dlbook import plotting  # noqa: E402
from dlbook.training import History  # noqa: E402


def test_plot_history_draws_train_and_val():
    h = History()
    for e in range(4):
        h.append("train_loss", 1 / (e + 1))
        h.append("val_loss", 1.2 / (e + 1))
        h.append("train_accuracy", e / 4)
    axes = plotting.plot_history(h, ("loss", "accuracy"), log_loss=True)
    assert len(axes) == 2
    assert [line.get_label() for line in axes[0].lines] == ["train", "val"]
    assert len(axes[1].lines) == 1 and axes[0].get_yscale() == "log"
    assert axes[0].get_xlabel() == "epoch"
    plt.close("all")


def test_plot_history_bad_input():
    with pytest.raises(KeyError, match="no train_f1"):
        plotting.plot_history({"train_loss": [1.0]}, "f1")
    with pytest.raises(ValueError, match="at least one"):
        plotting.plot_history({"train_loss": [1.0]}, ())


def test_confusion_and_images():
    ax = plotting.plot_confusion(np.eye(3, dtype=int) * 5)
    assert ax.get_xlabel() == "predicted class" and len(ax.texts) == 9
    with pytest.raises(ValueError, match="square"):
        plotting.plot_confusion(np.zeros((2, 3)))
    fig = plotting.show_images(np.zeros((5, 4, 4)), list("abcde"), ncols=3)
    assert len(fig.axes) == 6
    with pytest.raises(ValueError, match=r"\(k, H, W\)"):
        plotting.show_images(np.zeros((4, 4)))
    plotting.use_book_style()
    assert plt.rcParams["axes.grid"]
    plt.close("all")


def test_moving_average_windows_and_positions():
    steps, means = plotting.moving_average([1.0, 2.0, 3.0, 4.0, 5.0], k=2)
    np.testing.assert_allclose(means, [1.5, 2.5, 3.5, 4.5])
    np.testing.assert_array_equal(steps, [1, 2, 3, 4])      # plotted at the last step used
    steps, means = plotting.moving_average([2.0, 4.0], k=10)   # k capped at the length
    np.testing.assert_allclose(means, [3.0])
    with pytest.raises(ValueError, match="non-empty"):
        plotting.moving_average([], k=2)
    with pytest.raises(ValueError, match="k must"):
        plotting.moving_average([1.0], k=0)


def test_mosaic_places_each_image_in_its_row_and_column():
    mosaic = plotting.mosaic
    images = np.arange(5 * 2 * 3, dtype=float).reshape(5, 2, 3)
    out = mosaic(images, ncols=2, pad=1, fill=-1)
    assert out.shape == (3 * 3 - 1, 2 * 4 - 1)
    np.testing.assert_array_equal(out[3:5, 4:7], images[3])      # row 1, column 1
    np.testing.assert_array_equal(out[6:8, 4:7], -1)             # the missing sixth image
    assert (out[2] == -1).all() and (out[:, 3] == -1).all()      # the padding
    flat = mosaic(np.ones((3, 16)), ncols=3, pad=0)
    assert flat.shape == (4, 12)
    for bad in (dict(images=np.ones((2, 15)), ncols=1), dict(images=np.ones((2, 4, 4)), ncols=0),
                dict(images=np.ones((0, 4, 4)), ncols=1)):
        with pytest.raises(ValueError):
            mosaic(**bad)
