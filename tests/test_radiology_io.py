"""NIfTI files and DICOM series in and labels out, with their geometry.

Every volume is generated here from a known (Z, Y, X) "truth" in the plugin's convention (axial
slices first; Z inferior -> superior, Y anterior -> posterior, X right -> left, i.e. LPS), then
stored in another layout (RAS and LPS NIfTI, sagittal and coronal files, DICOM slices in
shuffled file order with shuffled InstanceNumbers): reading must give the truth back with its
spacing, origin and Hounsfield units. Labels written for a NIfTI input must reopen, with nibabel
alone, on the input's affine, shape, orientation and qform/sform codes, as 3D Slicer and
ITK-SNAP need to overlay them.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

nib = pytest.importorskip("nibabel", reason="the radiology extra installs nibabel")
pydicom = pytest.importorskip("pydicom", reason="the radiology extra installs pydicom")

from napari_sam2 import cli, radiology  # noqa: E402
from napari_sam2._reader import napari_get_reader, read_radiology, read_tiff  # noqa: E402
from napari_sam2._writer import write_labels  # noqa: E402
from napari_sam2.stack_files import open_stack  # noqa: E402

SPACING = (3.0, 0.7, 0.7)  # z, y, x mm
LPS_OFFSET = (10.0, 20.0, -30.0)  # RAS position of the first stored voxel of the LPS file


def _truth(shape=(5, 12, 14), seed=0) -> np.ndarray:
    """Hounsfield-like int16 values, every voxel distinct enough to catch any flip."""
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 2000, shape).astype(np.int16)


def _lps_image(truth: np.ndarray, dtype=None):
    """The truth as a NIfTI in LPS voxel order (x -> L, y -> P, z -> S), like ITK writes it."""
    sz, sy, sx = SPACING
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[:3, 3] = LPS_OFFSET
    data = truth.transpose(2, 1, 0)
    return nib.Nifti1Image(data.astype(dtype or data.dtype), affine)


def _expected_origin() -> tuple[float, float, float]:
    """LPS (S, P, L) of truth voxel (0, 0, 0) = first voxel of the LPS file."""
    r, a, s = LPS_OFFSET
    return (s, -a, -r)


def _save(img, path, codes=(1, 1)):
    img.header.set_qform(img.affine, code=codes[0])
    img.header.set_sform(img.affine, code=codes[1])
    nib.save(img, str(path))
    return path


def _in_orientation(img, axcodes):
    """The same image (same voxels in space) stored in another voxel orientation."""
    src = nib.orientations.io_orientation(img.affine)
    return img.as_reoriented(
        nib.orientations.ornt_transform(src, nib.orientations.axcodes2ornt(axcodes))
    )


# --- NIfTI in ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "axcodes", [("L", "P", "S"), ("R", "A", "S"), ("A", "S", "R"), ("R", "I", "A")]
)
def test_nifti_reads_axial_first_in_lps_whatever_the_file_orientation(tmp_path, axcodes):
    truth = _truth()
    img = _in_orientation(_lps_image(truth), axcodes)
    path = _save(img, tmp_path / "scan.nii.gz")
    assert "".join(nib.aff2axcodes(nib.load(path).affine)) == "".join(axcodes)

    assert napari_get_reader(str(path)) is read_radiology
    ((data, kwargs, kind),) = read_radiology(str(path))
    assert kind == "image"
    np.testing.assert_array_equal(data, truth)
    assert data.dtype == np.int16
    np.testing.assert_allclose(kwargs["scale"], SPACING)
    np.testing.assert_allclose(kwargs["translate"], _expected_origin(), atol=1e-4)
    assert kwargs["units"] == ("mm", "mm", "mm")
    assert kwargs["axis_labels"] == ("z", "y", "x")
    geometry = kwargs["metadata"]["radiology"]
    assert geometry["format"] == "nifti"
    assert geometry["source_orientation"] == "".join(axcodes)
    np.testing.assert_allclose(geometry["source_affine"], nib.load(path).affine)
    assert kwargs["metadata"]["axes"] == "ZYX"


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_scaling_gives_signed_hounsfield_units_and_lazy_slices(tmp_path, suffix):
    truth = _truth()
    img = _lps_image(truth + 1024, dtype=np.uint16)  # stored as CT scanners do
    img.header.set_slope_inter(1, -1024)
    path = _save(img, tmp_path / f"ct{suffix}")
    volume = radiology.open_nifti(path)
    assert np.issubdtype(volume.data.dtype, np.signedinteger)
    np.testing.assert_array_equal(volume.data, truth)
    # lazy reads: one slice, strided and reversed windows
    np.testing.assert_array_equal(volume.data[2], truth[2])
    np.testing.assert_array_equal(volume.data[-1, ::3, 5:1:-2], truth[-1, ::3, 5:1:-2])
    np.testing.assert_array_equal(volume.data[..., 4], truth[..., 4])
    # a non-integral scaling gives floats
    img.header.set_slope_inter(0.5, -10)
    volume = radiology.open_nifti(_save(img, tmp_path / f"float{suffix}"))
    assert volume.data.dtype == np.float32
    np.testing.assert_allclose(volume.data, (truth + 1024) * 0.5 - 10)


def test_nifti_4d_and_2d_files(tmp_path):
    truth = _truth((3, 8, 9))
    base = _lps_image(truth)
    series = np.stack([np.asarray(base.dataobj) + t for t in range(4)], axis=-1)
    path = _save(nib.Nifti1Image(series, base.affine), tmp_path / "dyn.nii.gz")
    ((data, kwargs, _),) = read_radiology(str(path))
    assert data.shape == (4, 3, 8, 9) and kwargs["axis_labels"] == ("t", "z", "y", "x")
    np.testing.assert_array_equal(data[2], truth + 2)
    single = nib.Nifti1Image(np.asarray(base.dataobj)[..., :1], base.affine)  # (X, Y, 1, 1)
    single = nib.Nifti1Image(np.asarray(single.dataobj)[..., None], base.affine)
    path = _save(single, tmp_path / "one.nii")
    ((data, _, _),) = read_radiology(str(path))
    np.testing.assert_array_equal(data, truth[:1])


def test_oblique_nifti_reads_on_the_nearest_axes_and_writes_back_exactly(tmp_path):
    truth = _truth()
    img = _lps_image(truth)
    angle = np.deg2rad(12)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    tilted = nib.Nifti1Image(np.asarray(img.dataobj), rotation @ img.affine)
    path = _save(_in_orientation(tilted, ("R", "A", "S")), tmp_path / "tilted.nii.gz")
    ((data, kwargs, _),) = read_radiology(str(path))
    np.testing.assert_array_equal(data, truth)
    np.testing.assert_allclose(kwargs["scale"], SPACING, rtol=1e-6)
    assert kwargs["metadata"]["radiology"]["oblique"] is True
    out = tmp_path / "labels.nii.gz"
    write_labels(str(out), (data > 0).astype(np.uint8), _layer_meta(kwargs))
    np.testing.assert_allclose(nib.load(str(out)).affine, nib.load(str(path)).affine)


# --- labels out ---------------------------------------------------------------------------


def _layer_meta(kwargs: dict, name="labels") -> dict:
    """What napari passes a writer for a Labels layer made like the image layer."""
    return {
        "name": name,
        "scale": kwargs["scale"],
        "translate": kwargs["translate"],
        "units": kwargs["units"],
        "axis_labels": kwargs["axis_labels"],
        "metadata": kwargs["metadata"],
    }


@pytest.mark.parametrize("axcodes", [("L", "P", "S"), ("R", "A", "S"), ("A", "S", "R")])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_labels_go_back_onto_the_nifti_source(tmp_path, axcodes, suffix):
    truth = _truth()
    src = _in_orientation(_lps_image(truth), axcodes)
    src_path = _save(src, tmp_path / "scan.nii.gz", codes=(1, 4))
    ((data, kwargs, _),) = read_radiology(str(src_path))
    labels = (data > 500).astype(np.uint16) + (data > 1500)  # ids 0, 1, 2

    out = tmp_path / f"labels{suffix}"
    assert write_labels(str(out), labels, _layer_meta(kwargs)) == [str(out)]
    written, source = nib.load(str(out)), nib.load(str(src_path))
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine)
    assert nib.aff2axcodes(written.affine) == tuple(axcodes)
    for getter in ("get_qform", "get_sform"):
        (a, code_a), (b, code_b) = (
            getattr(h, getter)(coded=True) for h in (written.header, source.header)
        )
        assert code_a == code_b
        np.testing.assert_allclose(a, b)
    assert written.get_data_dtype() == np.uint8  # the smallest type holding the ids
    # the file holds the labels of the source's own voxels, in the source's own order
    expected = (np.asarray(source.dataobj) > 500).astype(np.uint8) + (
        np.asarray(source.dataobj) > 1500
    )
    np.testing.assert_array_equal(np.asarray(written.dataobj), expected)
    # ... and this plugin reopens them as a Labels layer over the image
    ((again, again_kwargs, kind),) = read_radiology(str(out))
    assert kind == "labels"
    np.testing.assert_array_equal(again, labels)
    np.testing.assert_allclose(again_kwargs["translate"], kwargs["translate"], atol=1e-4)


@pytest.mark.parametrize(("top", "dtype"), [(3, np.uint8), (300, np.uint16), (70000, np.int32)])
def test_labels_dtype_fits_the_ids(tmp_path, top, dtype):
    labels = np.zeros((2, 3, 4), np.int64)
    labels[1, 2, 3] = top
    path = radiology.write_labels_nifti(tmp_path / "l.nii.gz", labels, scale=(2, 1, 1))
    assert nib.load(str(path)).get_data_dtype() == dtype
    negative = radiology.write_labels_nifti(tmp_path / "n.nii", labels - 1, scale=(2, 1, 1))
    assert nib.load(str(negative)).get_data_dtype() == np.int32


def test_labels_without_a_source_get_an_affine_from_scale_and_translate(tmp_path):
    labels = np.zeros((4, 6, 7), np.uint8)
    labels[1:3, 2:4, 1:6] = 5
    meta = {"scale": (2.5, 0.5, 0.8), "translate": (40.0, -12.0, 7.0), "metadata": {}}
    out = tmp_path / "drawn.nii.gz"
    write_labels(str(out), labels, meta)
    img = nib.load(str(out))
    assert img.shape == (7, 6, 4) and nib.aff2axcodes(img.affine) == ("L", "P", "S")
    ((again, kwargs, kind),) = read_radiology(str(out))
    assert kind == "labels"
    np.testing.assert_array_equal(again, labels)
    np.testing.assert_allclose(kwargs["scale"], meta["scale"])
    np.testing.assert_allclose(kwargs["translate"], meta["translate"])


def test_labels_of_another_shape_warn_and_use_the_layer_geometry(tmp_path):
    src_path = _save(_lps_image(_truth()), tmp_path / "scan.nii.gz")
    ((_, kwargs, _),) = read_radiology(str(src_path))
    with pytest.warns(UserWarning, match="not that of the volume"):
        write_labels(
            str(tmp_path / "crop.nii.gz"), np.ones((2, 3, 4), np.uint8), _layer_meta(kwargs)
        )
    assert nib.load(str(tmp_path / "crop.nii.gz")).shape == (4, 3, 2)


# --- DICOM in -----------------------------------------------------------------------------


def _write_slice(
    path,
    pixels,
    *,
    position,
    orientation,
    spacing,
    thickness,
    uids,
    number,
    intercept=-1024,
    bits_stored=12,
):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    if int(pydicom.__version__.split(".")[0]) < 3:  # pydicom 2.x encodes from these flags
        ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = uids
    ds.Modality = "CT"
    ds.SeriesDescription = "test CT"
    ds.InstanceNumber = number
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(v) for v in spacing]
    ds.SliceThickness = float(thickness)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, intercept, "HU"
    ds.PixelData = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<")).tobytes()
    try:
        ds.save_as(str(path), enforce_file_format=True)
    except TypeError:  # pydicom 2.x
        ds.save_as(str(path), write_like_original=False)


def write_ct_series(
    folder,
    truth,
    *,
    plane="axial",
    origin=(-100.0, -120.0, 50.0),
    seed=1,
    suffix=".dcm",
    prefix="IM",
    bits_stored=12,
    intercept=-1024,
    voxel=SPACING,
):
    """Write ``truth`` (Z, Y, X, HU) as a CT series, stored values ``HU - intercept``, in
    shuffled file order with shuffled InstanceNumbers; ``origin`` is the LPS position (x, y,
    z) of truth voxel (0, 0, 0)."""
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    uids = (generate_uid(), generate_uid(), generate_uid())
    sz, sy, sx = voxel
    ox, oy, oz = origin
    stored = truth.astype(np.int32) - intercept
    # unsigned where the stored values allow it (12-bit CT), else signed 16-bit
    stored = stored.astype(np.uint16 if stored.min() >= 0 else np.int16)
    if plane == "axial":  # rows along P, columns along L, slices along S
        slices = [stored[k] for k in range(truth.shape[0])]
        positions = [(ox, oy, oz + k * sz) for k in range(truth.shape[0])]
        orientation, spacing, thickness = (1, 0, 0, 0, 1, 0), (sy, sx), sz
    else:  # coronal: rows from superior to inferior, columns along L, slices along P
        top = oz + (truth.shape[0] - 1) * sz
        slices = [stored[::-1, j, :] for j in range(truth.shape[1])]
        positions = [(ox, oy + j * sy, top) for j in range(truth.shape[1])]
        orientation, spacing, thickness = (1, 0, 0, 0, 0, -1), (sz, sx), sy
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(slices))
    numbers = rng.permutation(len(slices)) + 1  # InstanceNumber says nothing about position
    for file_index, k in enumerate(order):
        _write_slice(
            folder / f"{prefix}{file_index:04d}{suffix}",
            slices[k],
            position=positions[k],
            orientation=orientation,
            spacing=spacing,
            thickness=thickness,
            uids=uids,
            number=int(numbers[file_index]),
            intercept=intercept,
            bits_stored=bits_stored,
        )
    return folder


@pytest.mark.parametrize("plane", ["axial", "coronal"])
def test_dicom_series_reads_in_position_order_in_hounsfield_units(tmp_path, plane, monkeypatch):
    truth = _truth()
    folder = write_ct_series(tmp_path / "series", truth, plane=plane)
    assert napari_get_reader(str(folder)) is read_radiology
    ((data, kwargs, kind),) = read_radiology(str(folder))
    assert kind == "image"
    assert data.dtype == np.int16  # 12 stored bits, intercept -1024: -1024 .. 3071
    np.testing.assert_array_equal(data, truth)
    np.testing.assert_allclose(kwargs["scale"], SPACING)
    np.testing.assert_allclose(kwargs["translate"], (50.0, -120.0, -100.0))  # (S, P, L)
    assert kwargs["contrast_limits"] == (-160.0, 240.0)  # CT: a soft-tissue window
    geometry = kwargs["metadata"]["radiology"]
    dicom = geometry["dicom"]
    assert geometry["format"] == "dicom" and dicom["Modality"] == "CT"
    assert dicom["StudyInstanceUID"] and dicom["SeriesInstanceUID"]
    assert dicom["RescaleIntercept"] == -1024 and dicom["RescaleSlope"] == 1
    # the files are kept in position order with their geometry
    depths = [p[2] if plane == "axial" else p[1] for p in dicom["ImagePositionPatient"]]
    assert depths == sorted(depths)
    # large volumes open as dask arrays read slice by slice
    monkeypatch.setattr("napari_sam2._reader.LAZY_BYTES", 0)
    ((lazy, _, _),) = read_radiology(str(folder))
    assert type(lazy).__module__.startswith("dask")
    np.testing.assert_array_equal(lazy[3].compute(), truth[3])


def test_one_dicom_file_opens_its_whole_series_and_folders_split_series(tmp_path):
    truth = _truth()
    folder = write_ct_series(tmp_path / "study", truth)
    one = sorted(folder.iterdir())[3]
    assert napari_get_reader(str(one)) is read_radiology
    ((data, _, _),) = read_radiology(str(one))
    np.testing.assert_array_equal(data, truth)
    # a second series (fewer slices) in the same folder: the reader opens both, largest first;
    # a stack for tracking must be one series, chosen by one of its files
    write_ct_series(folder, truth[:2], seed=5, origin=(0.0, 0.0, 0.0), prefix="SCOUT")
    layers = read_radiology(str(folder))
    assert [layer[0].shape[0] for layer in layers] == [5, 2]
    with pytest.raises(ValueError, match="2 DICOM series"):
        open_stack(folder)
    assert open_stack(one).data.shape == truth.shape


def test_dicom_files_without_extension_and_lists_of_files(tmp_path):
    truth = _truth((3, 6, 7))
    folder = write_ct_series(tmp_path / "plain", truth, suffix="")
    assert napari_get_reader(str(folder)) is read_radiology
    files = [str(p) for p in sorted((write_ct_series(tmp_path / "dcm", truth)).iterdir())]
    assert napari_get_reader(files) is read_radiology
    ((data, _, _),) = read_radiology(files)
    np.testing.assert_array_equal(data, truth)
    # other folders and files are not ours
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    assert napari_get_reader(str(tmp_path / "other")) is None
    assert napari_get_reader(str(tmp_path / "a.png")) is None
    assert napari_get_reader(str(tmp_path / "a.tif")) is read_tiff


def test_dicom_labels_go_to_nifti_with_the_series_geometry(tmp_path):
    truth = _truth()
    folder = write_ct_series(tmp_path / "series", truth, plane="coronal")
    ((data, kwargs, _),) = read_radiology(str(folder))
    labels = (data > 0).astype(np.uint8)
    out = tmp_path / "seg.nii.gz"
    write_labels(str(out), labels, _layer_meta(kwargs))
    img = nib.load(str(out))
    assert img.header.get_sform(coded=True)[1] == 1
    # voxel (x, y, z) of the file = truth voxel (z, y, x): compare positions in RAS
    np.testing.assert_allclose(img.affine @ [0, 0, 0, 1], [100.0, 120.0, 50.0, 1.0])
    np.testing.assert_array_equal(np.asarray(img.dataobj).transpose(2, 1, 0), labels)


# --- stacks for tracking ------------------------------------------------------------------


def test_open_stack_gives_lazy_volumes_in_mm(tmp_path):
    truth = _truth()
    nii = _save(_in_orientation(_lps_image(truth), ("R", "A", "S")), tmp_path / "v.nii.gz")
    dcm = write_ct_series(tmp_path / "series", truth)
    for path in (nii, dcm):
        opened = open_stack(path)
        assert opened.axes == "ZYX" and opened.unit == "mm"
        assert opened.sizes == dict(zip("ZYX", SPACING, strict=True))
        assert opened.geometry["shape"] == list(truth.shape)
        np.testing.assert_array_equal(opened.data[1], truth[1])
        np.testing.assert_array_equal(np.asarray(opened.data), truth)


def test_missing_libraries_name_the_extra(tmp_path, monkeypatch):
    path = _save(_lps_image(_truth()), tmp_path / "v.nii.gz")
    monkeypatch.setitem(sys.modules, "nibabel", None)  # as if not installed
    with pytest.raises(ImportError, match=r"napari-sam2\[radiology\]"):
        read_radiology(str(path))
    with pytest.raises(ValueError, match=r"napari-sam2\[radiology\]"):
        open_stack(path)
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(ImportError, match=r"pydicom.*napari-sam2\[radiology\]"):
        radiology.open_dicom(tmp_path / "any.dcm")  # the import fails first


def test_cli_track_on_nifti_writes_labels_with_the_input_affine(tmp_path, model_args):
    truth = _truth((4, 40, 48))
    truth[:, 12:28, 14:34] = 900  # a bright block to prompt on
    src = _save(_in_orientation(_lps_image(truth), ("R", "A", "S")), tmp_path / "ct.nii.gz")
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"frame": 1, "object_id": 1, "box": [12, 14, 27, 33]}]))
    out = tmp_path / "out"
    argv = ["track", str(src), "--prompts", str(prompts), "--out", str(out), *model_args]
    assert cli.main(argv) == 0
    assert not (out / "labels.tif").exists()
    written, source = nib.load(str(out / "labels.nii.gz")), nib.load(str(src))
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine)
    assert nib.aff2axcodes(written.affine) == ("R", "A", "S")
    # a named NIfTI output, propagating along Y (frames are coronal planes), lands on the
    # same voxels: the label planes go back to their place in (Z, Y, X)
    named = tmp_path / "named" / "seg.nii.gz"
    prompts.write_text(json.dumps([{"frame": 20, "object_id": 1, "box": [0, 14, 3, 33]}]))
    argv = ["track", str(src), "--prompts", str(prompts), "--out", str(named), *model_args]
    assert cli.main(argv + ["--axis", "1", "--format", "tiff", "csv"]) == 0
    assert (tmp_path / "named" / "seg.csv").exists()
    np.testing.assert_allclose(nib.load(str(named)).affine, source.affine)


# --- real data ----------------------------------------------------------------------------


def test_real_ct_as_a_dicom_series(tmp_path, data_dir):
    tifffile = pytest.importorskip("tifffile")
    path = data_dir / "totalseg" / "ct_image_zyx.tif"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    hu = tifffile.imread(path)
    assert hu.dtype == np.int16
    folder = write_ct_series(tmp_path / "ct", hu, bits_stored=16, voxel=(3.0, 3.0, 3.0))
    opened = open_stack(folder)
    assert opened.sizes == {"Z": 3.0, "Y": 3.0, "X": 3.0}
    np.testing.assert_array_equal(np.asarray(opened.data), hu)  # HU, slice order by position
    ((data, kwargs, _),) = read_radiology(str(folder))
    assert np.issubdtype(data.dtype, np.signedinteger)
    np.testing.assert_array_equal(data, hu)
    np.testing.assert_allclose(kwargs["scale"], (3.0, 3.0, 3.0))


@pytest.mark.parametrize("source", ["nifti", "dicom"])
def test_cli_label_planes_land_on_their_voxels_along_any_axis(
    tmp_path, model_args, monkeypatch, source
):
    """Frames along Y (coronal planes): a scripted object on plane y=10 around (z=2, x=20)
    must land, in the written file, on the world position of truth voxel (2, 10, 20)."""
    from scripted_tracker import ScriptedObject, ScriptedTracker

    def factory(model, frames, fill_hole_area, autocast):
        obj = ScriptedObject(1, (2, 20), radius=1.5, present={10})
        return ScriptedTracker(frames, objects=[obj], fill_hole_area=fill_hole_area)

    monkeypatch.setattr(cli, "_make_tracker", factory)
    truth = _truth((4, 16, 40))
    lps = _lps_image(truth)
    expected = nib.affines.apply_affine(lps.affine, [20, 10, 2])  # LPS file voxel (x, y, z)
    if source == "nifti":
        src = _save(_in_orientation(lps, ("R", "A", "S")), tmp_path / "ct.nii.gz")
    else:  # a DICOM series at the same place: labels go to NIfTI with the series geometry
        src = write_ct_series(tmp_path / "series", truth, origin=(-10.0, -20.0, -30.0))
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"frame": 10, "object_id": 1, "points": [[2, 20]]}]))
    out = tmp_path / "out"
    argv = ["track", str(src), "--prompts", str(prompts), "--out", str(out), "--axis", "1"]
    assert cli.main(argv + model_args) == 0
    written = nib.load(str(out / "labels.nii.gz"))
    ijk = np.argwhere(np.asarray(written.dataobj) == 1)
    assert len(ijk)
    world = nib.affines.apply_affine(written.affine, ijk)
    assert np.allclose(world[:, 1], expected[1])  # one coronal plane: y = 10
    np.testing.assert_allclose(world.mean(axis=0), expected, atol=1e-3)


def test_napari_opens_a_dicom_folder_and_saves_labels_as_nifti(tmp_path):
    """Through napari itself (its npe2 reader and writer lookup, no Qt): a folder of slices
    opens as one CT layer, and ``.nii.gz`` picks the NIfTI writer."""
    from napari.components import ViewerModel
    from napari.plugins import _initialize_plugins
    from napari.plugins.io import save_layers

    _initialize_plugins()
    truth = _truth()
    folder = write_ct_series(tmp_path / "series", truth)
    viewer = ViewerModel()
    (image,) = viewer.open(str(folder), plugin="napari-sam2")
    np.testing.assert_array_equal(image.data, truth)
    np.testing.assert_allclose(image.scale, SPACING)
    labels = viewer.add_labels(
        (image.data > 0).astype(np.uint8),
        scale=image.scale,
        translate=image.translate,
        metadata=dict(image.metadata),
    )
    path = tmp_path / "seg.nii.gz"
    assert save_layers(str(path), [labels], plugin="napari-sam2") == [str(path)]
    img = nib.load(str(path))
    np.testing.assert_array_equal(np.asarray(img.dataobj).transpose(2, 1, 0), labels.data)
    np.testing.assert_allclose(img.affine @ [0, 0, 0, 1], [100.0, 120.0, 50.0, 1.0])
