import pytest
import torch

from dlbook.vision import ShiftCrop, crop


def test_crop_offsets_per_image():
    images = torch.arange(2 * 5 * 5).reshape(2, 5, 5)
    out = crop(images, 2, torch.tensor([0, 3]), torch.tensor([1, 2]))
    assert torch.equal(out[0], images[0, 0:2, 1:3])
    assert torch.equal(out[1], images[1, 3:5, 2:4])
    chans = torch.randn(2, 3, 6, 6)
    assert torch.equal(crop(chans, 4, 1, 2), chans[:, :, 1:5, 2:6])


def test_crop_errors():
    with pytest.raises(ValueError, match="does not fit"):
        crop(torch.zeros(1, 5, 5), 4, 2, 0)
    with pytest.raises(ValueError, match=r"\(n, H, W\)"):
        crop(torch.zeros(5, 5), 2, 0, 0)
    with pytest.raises(ValueError, match="no room"):
        ShiftCrop(20, max_shift=5)(torch.zeros(1, 28, 28))


def test_shift_crop_centres_in_eval_and_shifts_in_training():
    images = torch.randn(64, 28, 28)
    layer = ShiftCrop(20, max_shift=2)
    layer.eval()
    assert torch.equal(layer(images), images[:, 4:24, 4:24])
    layer.train()
    torch.manual_seed(0)
    out = layer(images)
    assert out.shape == (64, 20, 20)
    assert not torch.equal(out, images[:, 4:24, 4:24])
