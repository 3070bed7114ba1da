"""Keep patient identifiers out of what ``cervkit predict`` writes and prints.

DICOM exports often carry the patient's name and ID in the header and in the file names.
``predict`` therefore, unless asked (``keep_identifiers`` / ``--keep-identifiers``):

- writes a **pseudonym** (:func:`pseudonym`, prefix ``p-``) of the header's PatientID
  (else PatientName) in the ``patient_id`` column, never the raw value;
- names DICOM outputs after a pseudonym of the input's path (``names="auto"``);
- removes the header's identifiers from any error text it prints or records
  (:func:`redact`).

A pseudonym is **not anonymisation**: it is a truncated SHA-256 of the value, so anyone who
has a list of candidate IDs can recompute it (numeric IDs are easy to enumerate). Pass a
secret ``salt`` (``--salt`` or ``$CERVKIT_PSEUDONYM_SALT``, the same for every batch of a
project so a patient keeps one pseudonym) to make that much harder. Paths are not
pseudonymised: the ``file`` column and the queue's ``image`` column name the inputs.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

__all__ = ["DicomIdentity", "SALT_ENV", "dicom_identity", "dicom_patient_key", "is_dicom_path", "modality_code",
           "pseudonym", "redact"]

SALT_ENV = "CERVKIT_PSEUDONYM_SALT"
XR_MODALITIES = frozenset({"CR", "DX", "DR", "RF", "XA", "RG", "PX", "MG"})
MRI_MODALITIES = frozenset({"MR"})


def pseudonym(value: str, *, length: int = 12, prefix: str = "", salt: str | None = None) -> str:
    """A deterministic pseudonym: ``prefix`` + the first ``length`` hex digits of SHA-256.

    Parameters
    ----------
    value : str
        The identifier (patient ID, file path …).
    length : int, default 12
        Hex digits kept (1..64); 12 digits make collisions negligible for millions of values.
    prefix : str, default ""
        Put in front, e.g. ``"p-"`` for patients.
    salt : str, optional
        Secret mixed in before hashing; default ``$CERVKIT_PSEUDONYM_SALT`` or none.

    Returns
    -------
    str
        The pseudonym. The same value (and salt) always gives the same pseudonym; this is a
        pseudonym, not anonymisation (see the module docstring).
    """
    if not 1 <= int(length) <= 64:
        raise ValueError(f"pseudonym length must be 1..64, got {length}")
    secret = os.environ.get(SALT_ENV, "") if salt is None else salt
    digest = hashlib.sha256((secret + "\0" if secret else "").encode() + str(value).encode()).hexdigest()
    return f"{prefix}{digest[:int(length)]}"


@dataclass(frozen=True)
class DicomIdentity:
    """What a DICOM header says about who and how (raw values: handle with care).

    Attributes
    ----------
    patient_id, patient_name : str or None
        PatientID and PatientName, stripped; None when absent or empty.
    modality : str or None
        The Modality code (``MR``, ``CR`` …).
    """

    patient_id: str | None
    patient_name: str | None
    modality: str | None

    @property
    def key(self) -> str | None:
        """PatientID, else PatientName, else None."""
        return self.patient_id or self.patient_name

    @property
    def identifiers(self) -> tuple[str, ...]:
        """The non-empty raw identifiers, for :func:`redact`."""
        return tuple(v for v in (self.patient_id, self.patient_name) if v)


def _text(value: object) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def dicom_identity(path: str | PathLike[str]) -> DicomIdentity | None:
    """Read PatientID, PatientName and Modality from a DICOM header (pixels are not read).

    Parameters
    ----------
    path : str or PathLike
        Any file.

    Returns
    -------
    DicomIdentity or None
        None when the file is missing or not DICOM.
    """
    import pydicom

    from cervkit.io.dicom import has_dicom_preamble

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=not has_dicom_preamble(path),
                             specific_tags=["PatientID", "PatientName", "Modality"])
    except Exception:  # pydicom raises many types for non-DICOM bytes; all mean "no identity"
        return None
    if not any(k in ds for k in ("PatientID", "PatientName", "Modality")) and not has_dicom_preamble(path):
        return None
    return DicomIdentity(_text(ds.get("PatientID")), _text(ds.get("PatientName")), _text(ds.get("Modality")))


def dicom_patient_key(path: str | PathLike[str]) -> str | None:
    """PatientID, else PatientName, of a DICOM file (read with ``stop_before_pixels``).

    Parameters
    ----------
    path : str or PathLike
        Any file.

    Returns
    -------
    str or None
        The raw key; None when absent or the file is not DICOM.
    """
    identity = dicom_identity(path)
    return identity.key if identity is not None else None


def modality_code(dicom_modality: str | None) -> str | None:
    """Map a DICOM Modality to a manifest modality.

    Parameters
    ----------
    dicom_modality : str or None
        E.g. ``CR``, ``DX``, ``MR``.

    Returns
    -------
    str or None
        ``XR`` for projection radiography (CR, DX, DR, RF, XA, RG, PX, MG), ``MRI`` for MR,
        None otherwise (CT, secondary capture …).
    """
    code = (dicom_modality or "").strip().upper()
    if code in XR_MODALITIES:
        return "XR"
    if code in MRI_MODALITIES:
        return "MRI"
    return None


def redact(text: str, identifiers: tuple[str, ...] | list[str], *, placeholder: str = "<redacted>") -> str:
    """Replace every occurrence of each identifier (and its ``^``-separated name parts) in ``text``.

    Parameters
    ----------
    text : str
        A message.
    identifiers : sequence of str
        Raw values to remove (see :attr:`DicomIdentity.identifiers`).
    placeholder : str
        What replaces them.

    Returns
    -------
    str
        ``text`` without the identifiers.
    """
    parts: set[str] = set()
    for value in identifiers:
        parts.add(value)
        parts.update(p for p in value.replace("^", " ").split() if len(p) > 2)
    for part in sorted(parts, key=len, reverse=True):
        text = text.replace(part, placeholder)
    return text


def is_dicom_path(path: str | PathLike[str]) -> bool:
    """Whether ``path`` looks like DICOM: ``.dcm``/``.dicom``/``.ima`` suffix or the ``DICM`` preamble.

    Parameters
    ----------
    path : str or PathLike
        A file (read only when its suffix does not tell).

    Returns
    -------
    bool
        Whether it is taken for DICOM.
    """
    from cervkit.io.dicom import has_dicom_preamble

    return Path(path).suffix.lower() in {".dcm", ".dicom", ".ima"} or has_dicom_preamble(path)
