"""DICOM SEG export of a label map (highdicom), its reader, and the header scrub.

One **binary segment per vertebral body**: label ``k`` of the label map (1..K, top to
bottom) is segment number ``k``. Its Segment Label is ``"C2 vertebral body"`` … when level
names are given (``{1: "C2", …}``), else ``"Vertebral body k"``; the Segmented Property
Category is SCT "Anatomical Structure" and the Type the level's SCT vertebra code (``C2
vertebra`` …, from :data:`pydicom.sr.codedict.codes`) or SCT "Vertebra" for unnamed bodies.
Every label 1..max is described; a label absent from the map is an empty segment (no frame).

The SEG references its source image (Study/Series/SOP Instance UIDs, Referenced Series and
Source Image sequences, Frame of Reference when the source has one), so viewers overlay it.

Sources without patient coordinates (single-frame CR/DX/RG radiographs with no Image Position
/ Orientation and no Frame of Reference) are supported as highdicom allows: one frame per
segment, matched pixel for pixel to the source. Their Pixel Measures are written by this
module: PixelSpacing if positive, else ImagerPixelSpacing (detector plane: magnified; said in
the Content Description), else the caller's ``spacing_mm``, else none. SliceThickness is
written empty (a projection image has none; highdicom cannot read Pixel Measures without
the attribute). Sources with patient coordinates (MR, CT) keep their own measures. For a
multi-frame source one frame is segmented (``frame_index``, default the middle one, as
:func:`cervkit.io.images.read_image` picks); the other frames get no SEG frame.

Privacy (unless ``keep_identifiers``), applied by :func:`scrub_identifiers` to everything
highdicom copied from the source: PatientName and PatientID become the pseudonym
``p-<12 hex>`` (:func:`cervkit.io.privacy.pseudonym` of PatientID, else PatientName: the same
patient keeps one pseudonym, and it equals the ``patient_id`` that ``cervkit predict``
writes); PatientBirthDate, AccessionNumber, ReferringPhysicianName and StudyID are emptied;
the keywords of :data:`REMOVED_KEYWORDS` (other IDs and names, addresses, institution,
physicians, operators …) are deleted at any depth; any remaining text element that still
contains the raw name or ID is emptied. PatientIdentityRemoved is set to ``YES`` with a
DeidentificationMethod saying what was done: UIDs, dates, sex, age, size and weight are
**kept** (so the reference to the source resolves), which is a pseudonymisation, not a full
de-identification profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from cervkit.core.errors import CervkitInputError
from cervkit.core.files import atomic_path, check_writable

__all__ = ["EMPTIED_KEYWORDS", "REMOVED_KEYWORDS", "read_dicom_seg", "scrub_identifiers",
           "segment_label", "write_dicom_seg"]

EMPTIED_KEYWORDS = ("PatientBirthDate", "AccessionNumber", "ReferringPhysicianName", "StudyID")
REMOVED_KEYWORDS = (
    "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthName",
    "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers", "IssuerOfPatientID",
    "MedicalRecordLocator", "PatientComments", "InstitutionName", "InstitutionAddress",
    "InstitutionalDepartmentName", "NameOfPhysiciansReadingStudy", "PerformingPhysicianName",
    "PhysiciansOfRecord", "RequestingPhysician", "OperatorsName", "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers", "ReferringPhysicianIdentificationSequence",
    "PhysiciansOfRecordIdentificationSequence", "StationName", "PatientBirthTime",
    "MilitaryRank", "BranchOfService", "Occupation", "AdditionalPatientHistory",
)
_TEXT_VRS = {"PN", "LO", "SH", "ST", "LT", "UT", "UC"}
_DEIDENT_METHOD = ("cervkit: PatientName/PatientID replaced by a SHA-256 pseudonym; birth date, "
                   "accession number, study ID, referring physician emptied; other IDs, names, "
                   "addresses, institution and staff removed; UIDs and dates retained")


def segment_label(label: int, level_names: Mapping[int, str] | None = None) -> str:
    """The Segment Label of label ``label``: ``"C3 vertebral body"`` or ``"Vertebral body 2"``.

    Parameters
    ----------
    label : int
        Label value in the map (1..K, top to bottom) = segment number.
    level_names : mapping of int to str, optional
        Label → level name.

    Returns
    -------
    str
        The label text (at most 64 characters, as DICOM LO allows).
    """
    name = (level_names or {}).get(int(label))
    return (f"{name} vertebral body" if name else f"Vertebral body {int(label)}")[:64]


def _descriptions(n: int, level_names: Mapping[int, str] | None) -> list[Any]:
    """Segment descriptions for segments 1..n."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from cervkit.core.version import __version__

    algorithm = hd.AlgorithmIdentificationSequence(
        name="cervkit YOLO-UNet", version=__version__,
        family=codes.DCM.ArtificialIntelligence)
    out = []
    for k in range(1, n + 1):
        name = (level_names or {}).get(k)
        prop = getattr(codes.SCT, f"{name}Vertebra", None) if name else None
        out.append(hd.seg.SegmentDescription(
            segment_number=k, segment_label=segment_label(k, level_names),
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=prop if prop is not None else codes.SCT.Vertebra,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm))
    return out


def _positive_pair(value: Any) -> tuple[float, float] | None:
    """Return (row, col) when ``value`` holds two positive numbers, else None."""
    try:
        row, col = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (row, col) if row > 0 and col > 0 and np.isfinite([row, col]).all() else None


def _set_projection_measures(seg: Any, source: Any, spacing_mm: tuple[float, float] | None) -> None:
    """Write (or drop) the Pixel Measures of a SEG whose source has no patient coordinates."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    spacing, note = _positive_pair(source.get("PixelSpacing")), ""
    if spacing is None and _positive_pair(source.get("ImagerPixelSpacing")) is not None:
        spacing = _positive_pair(source.get("ImagerPixelSpacing"))
        note = "spacing = ImagerPixelSpacing (detector plane)"
    if spacing is None and spacing_mm is not None:
        spacing, note = _positive_pair(spacing_mm), "spacing given by the caller"
    shared = seg.SharedFunctionalGroupsSequence[0]
    if spacing is None:
        if "PixelMeasuresSequence" in shared:
            del shared.PixelMeasuresSequence
        return
    item = Dataset()
    item.SliceThickness = None
    item.PixelSpacing = [f"{v:.10g}" for v in spacing]
    shared.PixelMeasuresSequence = Sequence([item])
    if note:
        seg.ContentDescription = f"Vertebral bodies; {note}"[:64]


def scrub_identifiers(ds: Any) -> Any:
    """Replace or remove the patient identifiers in a dataset, in place (see the module doc).

    Parameters
    ----------
    ds : pydicom.Dataset
        A dataset (e.g. a SEG highdicom built from a source image).

    Returns
    -------
    pydicom.Dataset
        ``ds`` itself.
    """
    from cervkit.io.privacy import pseudonym

    raw_id = str(ds.get("PatientID", "") or "").strip()
    raw_name = str(ds.get("PatientName", "") or "").strip()
    key = raw_id or raw_name
    alias = pseudonym(key, prefix="p-") if key else ""
    secrets = [s for s in (raw_id, raw_name, raw_name.replace("^", " ").strip()) if len(s) > 2]
    removed = set(REMOVED_KEYWORDS)

    def visit(dataset: Any, elem: Any) -> None:
        if elem.keyword in removed:
            del dataset[elem.tag]
        elif elem.VR in _TEXT_VRS and elem.value not in (None, "") and any(
                s in str(elem.value) for s in secrets):
            elem.value = None

    ds.walk(visit)
    if "PatientName" in ds or key:
        ds.PatientName = alias
    if "PatientID" in ds or key:
        ds.PatientID = alias
    for keyword in EMPTIED_KEYWORDS:
        if keyword in ds:
            setattr(ds, keyword, None)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = _DEIDENT_METHOD[:64]
    return ds


def _source_pixels(labels: np.ndarray, source: Any, frame_index: int | None, path: Path) -> np.ndarray:
    """The SEG pixel array for a single- or multi-frame source (label-map style)."""
    rows, cols = int(source.Rows), int(source.Columns)
    if labels.shape != (rows, cols):
        raise CervkitInputError(
            f"label map {labels.shape} does not match the source DICOM's {rows} x {cols} pixels", path)
    n_frames = int(source.get("NumberOfFrames", 1) or 1)
    if n_frames == 1:
        if frame_index not in (None, 0, -1):
            raise CervkitInputError(f"frame_index {frame_index} given for a single-frame source", path)
        return labels
    index = n_frames // 2 if frame_index is None else int(frame_index)
    if not -n_frames <= index < n_frames:
        raise CervkitInputError(f"frame_index {frame_index} out of range (0..{n_frames - 1})", path)
    stack = np.zeros((n_frames, rows, cols), np.uint8)
    stack[index % n_frames] = labels
    return stack


def write_dicom_seg(path: str | PathLike[str], labels: np.ndarray, source_dicom: str | PathLike[str], *,
                    level_names: Mapping[int, str] | None = None,
                    spacing_mm: tuple[float, float] | None = None, frame_index: int | None = None,
                    keep_identifiers: bool = False, overwrite: bool = False) -> Path:
    """Write a label map as a BINARY DICOM SEG referencing its source image, atomically.

    Parameters
    ----------
    path : str or PathLike
        Destination (``.dcm``); parent folders are created.
    labels : numpy.ndarray
        uint8 (H, W) label map on the source's pixel grid: 0 background, 1..K one vertebral
        body each, top to bottom; label k becomes segment k.
    source_dicom : str or PathLike
        The DICOM file the labels were drawn on (only its header is read).
    level_names : mapping of int to str, optional
        Label → level (``{1: "C2", …}``), used in segment labels and codes.
    spacing_mm : (float, float), optional
        Used only for a projection source whose header has no usable spacing.
    frame_index : int, optional
        Frame of a multi-frame source that ``labels`` segments (default the middle one).
    keep_identifiers : bool, default False
        Keep the patient's name, ID and the other copied identifiers; default scrub them
        (:func:`scrub_identifiers`).
    overwrite : bool, default False
        Replace an existing file; otherwise raise FileExistsError.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    CervkitInputError
        The source is not a readable DICOM image, the label map's shape differs from it, the
        map is empty, or highdicom rejects the source (e.g. a multi-frame source without
        patient coordinates).
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    import highdicom as hd
    import pydicom

    from cervkit.core.version import __version__

    path, source_path = Path(path), Path(source_dicom)
    check_writable(path, overwrite)
    try:
        source = pydicom.dcmread(source_path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for non-DICOM files
        raise CervkitInputError(f"not a readable DICOM file ({type(exc).__name__}); no SEG written",
                                source_path) from exc
    if "Rows" not in source or "SOPInstanceUID" not in source:
        raise CervkitInputError("DICOM file is not an image (no Rows/SOPInstanceUID); no SEG written",
                                source_path)
    arr = np.asarray(labels)
    if arr.ndim != 2 or arr.dtype.kind not in "ui" or (arr.size and arr.min() < 0) or arr.max() > 255:
        raise CervkitInputError(f"labels must be a 2D integer label map 0..255, got {arr.dtype} {arr.shape}",
                                path)
    arr = arr.astype(np.uint8)
    if not arr.any():
        raise CervkitInputError("the label map is empty: a DICOM SEG needs at least one segment", path)
    pixels = _source_pixels(arr, source, frame_index, source_path)
    try:
        seg = hd.seg.Segmentation(
            source_images=[source], pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=_descriptions(int(arr.max()), level_names),
            series_instance_uid=hd.UID(), series_number=900, sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer="cervkit", manufacturer_model_name="cervkit YOLO-UNet",
            software_versions=__version__, device_serial_number="0",
            content_label="VERTEBRAE", content_description="Vertebral bodies", series_description=
            "cervkit vertebral bodies")
    except (ValueError, AttributeError, TypeError) as exc:
        raise CervkitInputError(f"highdicom cannot build a SEG for this source: {exc}", source_path) from exc
    if "FrameOfReferenceUID" not in source:
        _set_projection_measures(seg, source, spacing_mm)
    if not keep_identifiers:
        scrub_identifiers(seg)
    with atomic_path(path, overwrite=overwrite) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return path


def read_dicom_seg(path: str | PathLike[str]) -> np.ndarray:
    """Decode a BINARY DICOM SEG of one image plane back into a label map.

    Each frame's Referenced Segment Number becomes the label of its set pixels (the
    convention :func:`write_dicom_seg` writes: segment k = vertebral body k, top to bottom).
    Frames are decoded by pydicom, independently of highdicom.

    Parameters
    ----------
    path : str or PathLike
        The SEG file.

    Returns
    -------
    numpy.ndarray
        uint8 (Rows, Columns) label map; where segments overlap the higher number wins.

    Raises
    ------
    CervkitInputError
        Not a readable SEG, not BINARY, or frames from more than one source plane.
    """
    import pydicom

    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
        frames = np.asarray(ds.pixel_array)
    except Exception as exc:  # pydicom raises many types for bad files
        raise CervkitInputError(f"not a readable DICOM SEG ({exc})", path) from exc
    if ds.get("SegmentationType") != "BINARY":
        raise CervkitInputError(f"SegmentationType {ds.get('SegmentationType')!r}; only BINARY is read", path)
    rows, cols = int(ds.Rows), int(ds.Columns)
    frames = frames.reshape(-1, rows, cols)
    positions = set()
    out = np.zeros((rows, cols), np.uint8)
    for frame, item in zip(frames, ds.PerFrameFunctionalGroupsSequence):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        plane = item.get("PlanePositionSequence")
        positions.add(tuple(float(v) for v in plane[0].ImagePositionPatient) if plane else None)
        out[(frame != 0) & (out < number)] = number
    if len(positions) > 1:
        raise CervkitInputError(f"SEG holds frames of {len(positions)} planes; one plane is read", path)
    return out
