import numpy as np

from cnnlab.data.augment import Augmentation


def images(count=20):
    return np.random.default_rng(0).integers(0, 256, (count, 32, 32, 3)).astype(np.uint8)


def test_no_augmentation_returns_the_images():
    x = images()
    indices = np.array([3, 1, 7])
    out = Augmentation(x, seed=0, flip=False, translate=0)(indices, np.random.default_rng(0), epoch=0)
    np.testing.assert_array_equal(out, x[indices])


def test_each_image_is_mirrored_in_every_other_epoch():
    x = images()
    augment = Augmentation(x, seed=0, flip=True, translate=0)
    indices = np.arange(len(x))
    even, odd = (augment(indices, np.random.default_rng(0), epoch) for epoch in (0, 1))
    for index in indices:
        mirrored = [np.array_equal(out[index], x[index, :, ::-1]) for out in (even, odd)]
        plain = [np.array_equal(out[index], x[index]) for out in (even, odd)]
        assert mirrored[0] != mirrored[1] and plain[0] != plain[1]
    np.testing.assert_array_equal(augment(indices, np.random.default_rng(5), 2), even)
    assert 0 < augment.flip_phase.sum() < len(x)


def test_shifts_are_crops_of_the_reflected_image_within_the_limit():
    x = images()
    augment = Augmentation(x, seed=0, flip=False, translate=2)
    indices = np.arange(len(x))
    out = augment(indices, np.random.default_rng(3), epoch=0)
    assert out.shape == x.shape and out.dtype == np.uint8
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    shifts = []
    for index in indices:
        found = [(dy, dx) for dy in range(5) for dx in range(5)
                 if np.array_equal(out[index], padded[index, dy:dy + 32, dx:dx + 32])]
        assert found, "every output is one of the 25 shifted crops"
        shifts.append(found[0])
    assert len(set(shifts)) > 3  # shifts differ from image to image
    again = augment(indices, np.random.default_rng(3), epoch=0)
    np.testing.assert_array_equal(out, again)  # the same generator state gives the same batch
