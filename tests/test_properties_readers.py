"""Property-based tests of the image readers and writer (hematoma.io), valid and hostile files alike.

Properties: a written image reads back equal, on the same grid, in every format;
a damaged file (truncated anywhere, header bytes changed, junk appended, empty,
a folder in its place, random bytes) is refused with an InputError naming it, or
(only where nobody could tell: bytes changed inside the voxels of an uncompressed
file) read as the header describes; masks are binary or refused; writing never
replaces or damages a file it was not asked to.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hematoma.io import read_geometry, read_image, read_mask, write_image
from strategies import (
    assert_names_file,
    assert_same_geometry,
    assert_same_image,
    assert_sane_geometry,
    attempt,
    fuzz,
    geometries,
    make_image,
    scratch,
    volumes,
    write_dicom_series,
)

FORMATS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
ATTACHED = (".nii.gz", ".nii", ".nrrd", ".mha")  # header and voxels in one file
DETACHED = (".nhdr", ".mhd")  # the header names a separate data file


def _write(folder: Path, image, suffix: str) -> tuple[Path, Path]:
    """Write ``image`` as x<suffix>; returns (the path a user gives, the file holding the voxels)."""
    path = write_image(image, folder / f"x{suffix}")
    data = path if suffix in ATTACHED else next(p for p in folder.iterdir() if p != path)
    return path, data


def _raw_bytes(path: Path) -> bytes:
    content = path.read_bytes()
    return gzip.decompress(content) if path.name.endswith(".gz") else content


def _check_refused(error, *paths) -> None:
    assert error is not None, "read without complaint"
    assert_names_file(error, *paths)


# --------------------------------------------------------------------------- valid files round-trip


@fuzz(60)
@given(array=volumes(), geometry=geometries(), suffix=st.sampled_from(FORMATS))
def test_written_image_reads_back_equal_on_the_same_grid(array, geometry, suffix):
    image = make_image(array, geometry)
    with scratch() as folder:
        path, _ = _write(folder, image, suffix)
        assert_same_image(read_image(path), image)


@fuzz(40)
@given(
    shape=st.lists(st.integers(3, 6), min_size=3, max_size=3),
    dtype=st.sampled_from((np.int16, np.uint8, np.float32)),
    data=st.data(),
    geometry=geometries(),
    suffix=st.sampled_from(FORMATS),
)
def test_a_mask_of_zero_and_one_label_value_reads_as_zero_one(shape, dtype, data, geometry, suffix):
    # The foreground stays off the border: a mask touching it over a whole slice may rightly be refused.
    inside = data.draw(st.lists(st.booleans(), min_size=int(np.prod([s - 2 for s in shape])),
                                max_size=int(np.prod([s - 2 for s in shape]))))
    if np.dtype(dtype).kind == "f":
        label = data.draw(st.floats(-1000, 1000, width=32).filter(lambda v: v != 0))
    else:
        info = np.iinfo(dtype)
        label = data.draw(st.integers(int(info.min), int(info.max)).filter(lambda v: v != 0))
    array = np.zeros(shape, dtype)
    array[1:-1, 1:-1, 1:-1] = np.where(np.reshape(inside, [s - 2 for s in shape]), label, 0).astype(dtype)
    image = make_image(array, geometry)
    with scratch() as folder:
        path, _ = _write(folder, image, suffix)
        mask = read_mask(path)
        assert sitk.GetArrayViewFromImage(mask).dtype == np.uint8
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(mask), (array != 0).astype(np.uint8))
        assert_same_geometry(mask, image)


# --------------------------------------------------------------------------- masks that are not binary


@st.composite
def non_binary_masks(draw) -> np.ndarray:
    """Masks no tool should write: 3+ distinct values, two values neither of them 0, or NaN."""
    kind = draw(st.sampled_from(("three_values", "no_zero", "nan")))
    dtype = np.float32 if kind == "nan" else draw(st.sampled_from((np.int16, np.uint8, np.float32)))
    array = draw(volumes(dtypes=(dtype,), min_side=2, max_side=5))
    flat = array.reshape(-1)
    if kind == "three_values":
        values = draw(st.lists(st.integers(0, 255), min_size=3, max_size=3, unique=True))
        flat[:3] = values
    elif kind == "no_zero":
        low = draw(st.integers(1, 100))
        flat[:] = np.where(np.arange(flat.size) % 2 == 0, low, low + 1)
    else:
        flat[draw(st.integers(0, flat.size - 1))] = np.nan
    return array


@fuzz(40)
@given(array=non_binary_masks(), geometry=geometries(), suffix=st.sampled_from((".nii.gz", ".nrrd", ".mha")))
def test_a_mask_that_is_not_binary_is_refused(array, geometry, suffix):
    with scratch() as folder:
        path, _ = _write(folder, make_image(array, geometry), suffix)
        _, error = attempt(read_mask, path)
        _check_refused(error, path)


# --------------------------------------------------------------------------- damaged files


@fuzz(80)
@given(array=volumes(), geometry=geometries(), suffix=st.sampled_from(FORMATS), data=st.data(),
       reader=st.sampled_from((read_image, read_geometry)))
def test_a_truncated_file_is_refused(array, geometry, suffix, data, reader):
    """Truncated anywhere (voxel data or, for a detached header, its content): never zero-filled silently."""
    with scratch() as folder:
        path, voxels = _write(folder, make_image(array, geometry), suffix)
        target = voxels
        if suffix in DETACHED and data.draw(st.booleans(), label="truncate the header"):
            target = path
        content = target.read_bytes()
        # A header losing only its trailing newline is not damaged.
        end = len(content.rstrip()) if target == path and suffix in DETACHED else len(content)
        cut = data.draw(st.integers(0, end - 1), label="bytes kept")
        target.write_bytes(content[:cut])
        _, error = attempt(reader, path)
        _check_refused(error, path, target)


@fuzz(30)
@given(shape=st.lists(st.integers(3, 5), min_size=3, max_size=3), suffix=st.sampled_from(ATTACHED), data=st.data())
def test_a_truncated_mask_is_refused(shape, suffix, data):
    array = np.zeros(shape, np.uint8)
    array[1:-1, 1:-1, 1:-1] = 1
    with scratch() as folder:
        path, _ = _write(folder, make_image(array, {"spacing": (1, 1, 1), "origin": (0, 0, 0),
                                                     "direction": (1, 0, 0, 0, 1, 0, 0, 0, 1)}), suffix)
        content = path.read_bytes()
        path.write_bytes(content[: data.draw(st.integers(0, len(content) - 1), label="bytes kept")])
        _, error = attempt(read_mask, path)
        _check_refused(error, path)


@fuzz(80)
@given(
    array=volumes(), geometry=geometries(), suffix=st.sampled_from(FORMATS),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4),
)
@example(  # one bit of "space directions" changed: a sheared, non-orthonormal grid
    array=np.zeros((1, 1, 1), np.int16), suffix=".nrrd", flips=[(0.625, 1)],
    geometry={"spacing": (2.0, 2.0, 1.0), "origin": (100.2265625, 1.192092896e-07, 0.0),
              "direction": (0.6, 0.8, 0.0, 0.8, -0.6, 0.0, 0.0, 0.0, -1.0)},
)
def test_changed_header_bytes_give_an_error_or_an_image_the_file_can_hold(array, geometry, suffix, flips):
    """Bytes of the header XOR-ed (inside the gzip stream for .nii.gz): refused, or a sane image whose
    voxels the file actually holds (a header promising more voxels than stored must be refused)."""
    with scratch() as folder:
        path, voxels = _write(folder, make_image(array, geometry), suffix)
        raw = bytearray(_raw_bytes(path))
        header_size = len(raw) - (array.nbytes if suffix in ATTACHED else 0)
        for where, mask in flips:
            raw[int(where * header_size)] ^= mask
        path.write_bytes(gzip.compress(bytes(raw)) if suffix == ".nii.gz" else bytes(raw))
        image, error = attempt(read_image, path)
        if error is not None:
            _check_refused(error, path, voxels)
            return
        assert_sane_geometry(image)
        stored = len(raw) if suffix in ATTACHED else voxels.stat().st_size
        needed = int(np.prod(image.GetSize())) * sitk.GetArrayViewFromImage(image).itemsize
        assert needed <= stored, f"{needed} bytes of voxels read from a file that holds {stored}"


@fuzz(60)
@given(
    array=volumes(), geometry=geometries(),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4),
)
def test_changed_bytes_of_a_compressed_file_give_an_error_or_the_same_image(array, geometry, flips):
    """gzip's CRC covers every voxel: a change in the stream is either harmless (gzip header fields
    such as the time stamp) or refused; never different voxels."""
    image = make_image(array, geometry)
    with scratch() as folder:
        path, _ = _write(folder, image, ".nii.gz")
        content = bytearray(path.read_bytes())
        for where, mask in flips:
            content[int(where * len(content))] ^= mask
        path.write_bytes(bytes(content))
        read, error = attempt(read_image, path)
        if error is not None:
            _check_refused(error, path)
        else:
            assert_same_image(read, image)


@fuzz(40)
@given(array=volumes(), geometry=geometries(), suffix=st.sampled_from(FORMATS),
       junk=st.binary(min_size=1, max_size=64))
def test_junk_appended_gives_an_error_or_the_same_image(array, geometry, suffix, junk):
    image = make_image(array, geometry)
    with scratch() as folder:
        path, voxels = _write(folder, image, suffix)
        with open(voxels, "ab") as handle:
            handle.write(junk)
        read, error = attempt(read_image, path)
        if error is not None:
            _check_refused(error, path, voxels)
        else:
            assert_same_image(read, image)


@fuzz(40)
@given(suffix=st.sampled_from(FORMATS + (".dcm",)), content=st.binary(max_size=600),
       reader=st.sampled_from((read_image, read_mask)))
def test_random_bytes_under_an_image_name_are_refused(suffix, content, reader):
    with scratch() as folder:
        path = folder / f"x{suffix}"
        path.write_bytes(content)
        _, error = attempt(reader, path)
        _check_refused(error, path)


@pytest.mark.parametrize("reader", [read_image, read_mask])
@pytest.mark.parametrize("suffix", FORMATS + (".dcm",))
def test_an_empty_file_or_a_folder_under_an_image_name_is_refused(tmp_path, suffix, reader):
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    folder = tmp_path / f"folder{suffix}"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    for path in (empty, folder):
        _, error = attempt(reader, path)
        _check_refused(error, path)


# --------------------------------------------------------------------------- writing


@fuzz(30)
@given(array=volumes(max_side=3), suffix=st.sampled_from(FORMATS), other=st.sampled_from(FORMATS),
       stem=st.sampled_from(("x", "y")))
@example(array=np.zeros((2, 2, 2), np.int16), suffix=".nhdr", other=".mhd", stem="x")  # both name x.raw
def test_writing_never_changes_a_file_it_was_not_asked_to_write(array, suffix, other, stem):
    """Without overwrite, an existing image (any format, same stem or not) is refused or left byte-for-byte;
    and an image already there is never touched by writing another one beside it."""
    geometry = {"spacing": (1, 1, 1), "origin": (0, 0, 0), "direction": (1, 0, 0, 0, 1, 0, 0, 0, 1)}
    first = make_image(array, geometry)
    second = make_image((array + 1).astype(array.dtype), geometry)
    with scratch() as folder:
        write_image(first, folder / f"x{suffix}")
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        target = folder / f"{stem}{other}"
        _, error = attempt(write_image, second, target, overwrite=False)
        if target.name in before:
            _check_refused(error, target)
        after = {p.name: p.read_bytes() for p in folder.iterdir()}
        assert {name: after.get(name) for name in before} == before, "an existing file was changed"
        assert_same_image(read_image(folder / f"x{suffix}"), first)


@pytest.mark.parametrize("obstacle", ["a folder at the path", "a file as the parent folder"])
@pytest.mark.parametrize("suffix", FORMATS)
def test_writing_where_a_folder_or_file_is_in_the_way_is_refused_and_leaves_nothing(tmp_path, suffix, obstacle):
    image = make_image(np.zeros((2, 2, 2), np.int16), {"spacing": (1, 1, 1), "origin": (0, 0, 0),
                                                       "direction": (1, 0, 0, 0, 1, 0, 0, 0, 1)})
    folder = tmp_path / f"taken{suffix}"
    folder.mkdir()
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    target = folder if obstacle == "a folder at the path" else blocker / f"x{suffix}"
    _, error = attempt(write_image, image, target, overwrite=True)
    _check_refused(error, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", f"taken{suffix}"]
    assert blocker.read_text() == "keep me" and list(folder.iterdir()) == []


@fuzz(20)
@given(suffix=st.text(alphabet=".abcdefgimnrtxz", min_size=1, max_size=8).filter(
    lambda s: not s.lower().endswith(FORMATS)))
def test_writing_an_unknown_format_is_refused(suffix):
    image = make_image(np.zeros((2, 2, 2), np.uint8), {"spacing": (1, 1, 1), "origin": (0, 0, 0),
                                                       "direction": (1, 0, 0, 0, 1, 0, 0, 0, 1)})
    with scratch() as folder:
        target = folder / f"x{suffix}"
        _, error = attempt(write_image, image, target)
        _check_refused(error, target)
        assert list(folder.iterdir()) == []


@fuzz(25)
@given(
    hu=st.lists(st.integers(3, 5), min_size=3, max_size=3).flatmap(
        lambda shape: arrays(np.int16, tuple(shape), elements=st.integers(-1024, 3000))),
    data=st.data(),
)
def test_a_dicom_series_with_a_truncated_slice_is_refused(hu, data):
    """A slice file cut short (copied while still being written) never becomes a zero-filled slice."""
    with scratch() as folder:
        files = write_dicom_series(folder / "series", hu)
        complete = read_image(folder / "series")
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(complete), hu)
        victim = files[data.draw(st.integers(0, len(files) - 1), label="slice")]
        content = victim.read_bytes()
        pixels = hu[0].nbytes
        # Cut inside the pixel data (the header alone may rightly be skipped as "not an image").
        # (Drawn as bytes cut, not bytes kept: the file's length varies with its generated UIDs, and Hypothesis
        # needs the same draws for the same example.)
        victim.write_bytes(content[: len(content) - data.draw(st.integers(1, pixels), label="cut")])
        image, error = attempt(read_image, folder / "series")
        if error is not None:
            _check_refused(error, folder / "series", victim)
        else:
            raise AssertionError(f"read without complaint as {image.GetSize()} from a series with a truncated slice")
