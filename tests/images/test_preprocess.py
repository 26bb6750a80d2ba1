"""sttn_sim.images.preprocess against torchvision's own output (tests/fixtures/images_expected.npz,
made by tests/fixtures/make_image_fixtures.py with torchvision 0.29.1 and Pillow 13.0.0).

Tolerance: none.  torchvision's float32 tensor is ``table[c, u8]`` (the fixture stores
both parts; the script checked the identity on every image), where ``u8`` is the
image after Pillow's convert/resize/crop and ``table`` is ToTensor's float32 division
by 255 followed by Normalize's float32 subtraction and division.  sttn_sim makes the
same Pillow calls and the same correctly rounded float32 operations in the same
order, so the arrays must be bit-identical (``np.array_equal``); a difference means
the pipelines differ (or Pillow decodes differently from the version that made the
fixture, which the failure message then shows).
"""

from pathlib import Path

import numpy as np
import PIL
import pytest
from PIL import Image

from sttn_sim.datasets import DatasetError
from sttn_sim.images.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRESETS,
    Preprocess,
    crop_box,
    decode_image,
    default_preprocess,
    parse_preprocess,
    resized_size,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
IMAGES = FIXTURES / "images"

VARIANTS = {
    "imagenet": PRESETS["imagenet"],
    "small": Preprocess(resize=36, crop=32, mean=IMAGENET_MEAN, std=IMAGENET_STD),
    "gray": Preprocess(resize=36, crop=32, channels=1),
    "pad": Preprocess(crop=100),
}


@pytest.fixture(scope="module")
def expected():
    with np.load(FIXTURES / "images_expected.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def test_fixture_covers_the_image_kinds(expected):
    modes = {name: Image.open(IMAGES / name).mode for name in expected["ids"]}
    assert {"CMYK", "L", "RGBA", "P", "RGB"} <= set(modes.values())
    sizes = [Image.open(IMAGES / name).size for name in expected["ids"]]
    assert any(w < h for w, h in sizes) and any(w > h for w, h in sizes)  # portrait and landscape


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_matches_torchvision_exactly(expected, variant):
    u8, table = expected[f"{variant}_u8"], expected[f"{variant}_table"]
    want = np.stack([table[c][u8[:, c]] for c in range(u8.shape[1])], axis=1)
    versions = ", ".join(expected["versions"])
    for n, name in enumerate(expected["ids"]):
        got = decode_image(IMAGES / name, VARIANTS[variant])
        assert got.dtype == np.float32 and got.shape == want[n].shape, (name, got.shape, want[n].shape)
        diff = float(np.max(np.abs(got.astype(np.float64) - want[n])))
        assert np.array_equal(got, want[n]), (
            f"{variant} {name}: max |sttn_sim - torchvision| = {diff:.3g}, "
            f"{int(np.sum(got != want[n]))} values differ (fixture: {versions}; here Pillow {PIL.__version__})")


def test_resized_size_is_torchvisions_rule():
    # short side -> 256, long side int(256 * long / short) (truncated, not rounded)
    assert resized_size(300, 199, 256) == (385, 256)     # 385.93 -> 385
    assert resized_size(150, 260, 256) == (256, 443)     # 443.73 -> 443
    assert resized_size(240, 240, 256) == (256, 256)
    assert resized_size(256, 300, 256) == (256, 300)     # already right: no resize


def test_crop_box_rounds_half_to_even_and_pads():
    assert crop_box(385, 256, 224) == (80, 16, 304, 240)   # (385-224)/2 = 80.5 -> 80
    assert crop_box(387, 256, 224) == (82, 16, 306, 240)   # 81.5 -> 82
    assert crop_box(41, 29, 100) == (-29, -35, 71, 65)     # pad (100-41)//2 = 29 before, 30 after


def test_preset_values():
    p = PRESETS["imagenet"]
    assert (p.resize, p.crop, p.mean, p.std, p.channels) == (256, 224, (0.485, 0.456, 0.406),
                                                              (0.229, 0.224, 0.225), 3)
    assert PRESETS["none"] == Preprocess()


@pytest.mark.parametrize("spec,want", [
    ("imagenet", PRESETS["imagenet"]),
    ("none", Preprocess()),
    ("imagenet,resize=292,crop=256", Preprocess(292, 256, IMAGENET_MEAN, IMAGENET_STD)),
    ("resize=36,crop=32", Preprocess(36, 32, IMAGENET_MEAN, IMAGENET_STD)),
    ("resize=36, crop=32, normalize=none", Preprocess(36, 32)),
    ("none,crop=28", Preprocess(crop=28)),
    ("imagenet,resize=none", Preprocess(None, 224, IMAGENET_MEAN, IMAGENET_STD)),
])
def test_parse_preprocess(spec, want):
    assert parse_preprocess(spec) == want
    assert parse_preprocess(want.describe()) == want


@pytest.mark.parametrize("spec,message", [
    ("imagenets", r"unknown preset 'imagenets'"),
    ("imagenet,crop=0", r"crop='0': expected a positive integer or none"),
    ("imagenet,size=3", r"unknown key 'size'"),
    ("imagenet,normalize=cifar", r"normalize='cifar': expected imagenet or none"),
    ("crop=32,imagenet", r"'imagenet' is not key=value"),
    ("", r"expected a spec string"),
])
def test_parse_preprocess_errors(spec, message):
    with pytest.raises(DatasetError, match=message):
        parse_preprocess(spec)


def test_grayscale_models_need_their_own_normalisation():
    with pytest.raises(DatasetError, match=r"need 1 value\(s\), one per channel \(use normalize=none"):
        parse_preprocess("imagenet", channels=1)
    assert parse_preprocess("imagenet,normalize=none", channels=1).channels == 1


def test_preprocess_validates_fields():
    with pytest.raises(DatasetError, match=r"channels=2: expected 1 \(grayscale\) or 3 \(RGB\)"):
        Preprocess(channels=2)
    with pytest.raises(DatasetError, match="give both mean and std"):
        Preprocess(mean=IMAGENET_MEAN)
    with pytest.raises(DatasetError, match="contains 0"):
        Preprocess(mean=(0.0,) * 3, std=(1.0, 0.0, 1.0))


def test_default_preprocess():
    assert default_preprocess((3, 224, 224)) == PRESETS["imagenet"]
    assert default_preprocess(None) == PRESETS["imagenet"]
    assert default_preprocess((1, 28, 28)) == Preprocess(channels=1)


def test_none_keeps_the_image_and_scales_to_unit_range(tmp_path):
    pixels = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    x = decode_image(tmp_path / "a.png", PRESETS["none"])
    assert x.shape == (3, 5, 7) and x.dtype == np.float32
    # float64 reference; float32(u8)/255 is the correctly rounded quotient: within half an ulp
    np.testing.assert_allclose(x, pixels.transpose(2, 0, 1) / 255.0, rtol=2 ** -24, atol=0)


def test_shape_check_names_file_and_shapes(tmp_path):
    Image.new("RGB", (40, 50)).save(tmp_path / "b.png")
    with pytest.raises(DatasetError, match=r"b\.png: preprocessed image has shape \(3, 50, 40\), the model "
                                           r"expects \(3, 32, 32\) \(the preset 'none' uses images as they are"):
        decode_image(tmp_path / "b.png", PRESETS["none"], input_shape=(3, 32, 32))


def test_decode_errors_name_the_file(tmp_path):
    (tmp_path / "text.jpg").write_text("not a jpeg")
    with pytest.raises(DatasetError, match=r"text\.jpg: not an image file Pillow can identify"):
        decode_image(tmp_path / "text.jpg", PRESETS["imagenet"])
    Image.new("RGB", (64, 64), (10, 200, 30)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"cut\.jpg: truncated or unreadable image \(OSError: "):
        decode_image(tmp_path / "cut.jpg", PRESETS["imagenet"])
    with pytest.raises(DatasetError, match=r"missing\.png: no such file"):
        decode_image(tmp_path / "missing.png", PRESETS["imagenet"])


def test_image_fixtures_stay_small():
    """The torchvision-made fixture (images and expected arrays) stays under 1.1 MB."""
    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    total = sum(p.stat().st_size for p in (fixtures / "images").rglob("*") if p.is_file())
    total += (fixtures / "images_expected.npz").stat().st_size
    assert total < 1_100_000
