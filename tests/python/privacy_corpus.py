"""Instances that carry identity where real archives put it beyond the attributes a
de-identifier looks at first: a report naming the patient and physicians in its text, a key
object selection whose references name the hospital's archive by URL, an image with a private
element and a digital signature after its encapsulated pixel data, and a presentation state
whose annotation text names the patient. Every planted value is in `PLANTED`: none of them may
appear in any byte the de-identifying gateway sends.

The instances are made from pydicom's own test files and the standard's templates, with fresh
UIDs, and loaded into an Orthanc site by its REST API for the tests that need them.
"""

import copy
import io

import pydicom
import requests
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

PATIENT_NAME = "Quimbleton^Gwendolyn"
PATIENT_ID = "MRN-8675309"
PHYSICIAN = "Fennimore^Archibald"
ARCHIVE_HOST = "pacs.quimbleton-hospital.example"
ARCHIVE_AE = "QUIMBLEPACS"
HL7_ID = "HL7MSG-5551212^QUIMBLE"
ISSUER_ENTITY = "quimbleton-hospital.example.org"
REPORT_DATE = "20190304"
DESCRIPTION = "MR for Ng, born 03.02.1961, seen 2019-03-04; angle 12.5"
# The description as Clean Descriptors leaves it.
DESCRIPTION_CLEANED = "MR for [removed], born [removed], seen [removed]; angle 12.5"

# Every value planted in the corpus that must never leave a de-identifying gateway; the UIDs
# of the sources are added as the corpus is made.
PLANTED = {
    "Quimbleton", "Gwendolyn", PATIENT_ID, "Fennimore", "Archibald", ARCHIVE_HOST, ARCHIVE_AE,
    "HL7MSG-5551212", ISSUER_ENTITY, "quimbleton",
}

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"
GRAYSCALE_PS = "1.2.840.10008.5.1.4.1.1.11.1"


def code(value, scheme, meaning):
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return Sequence([item])


def content_item(relationship, value_type, concept, **values):
    item = Dataset()
    item.RelationshipType, item.ValueType = relationship, value_type
    item.ConceptNameCodeSequence = code(*concept)
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def patient_and_study(ds, study_uid, modality):
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = PATIENT_NAME, PATIENT_ID, "19610203", "F"
    ds.IssuerOfPatientID = "QUIMBLETON"
    qualifiers = Dataset()
    qualifiers.UniversalEntityID, qualifiers.UniversalEntityIDType = ISSUER_ENTITY, "DNS"
    ds.IssuerOfPatientIDQualifiersSequence = Sequence([qualifiers])
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study_uid, generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = REPORT_DATE, "101500", "QS1", "QACC77"
    ds.ReferringPhysicianName, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = PHYSICIAN, modality, 90, 1
    ds.SeriesDate, ds.ContentDate, ds.ContentTime = REPORT_DATE, REPORT_DATE, "101600"


def part10(ds, sop_class):
    ds.SOPClassUID = sop_class
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def report(study_uid, image):
    """A Basic Text SR whose text, names and dates name the patient and a physician."""
    ds = Dataset()
    patient_and_study(ds, study_uid, "SR")
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "VERIFIED"
    observer = Dataset()
    observer.VerifyingObserverName, observer.VerificationDateTime = PHYSICIAN, REPORT_DATE + "120000"
    observer.VerifyingOrganization = "Quimbleton Hospital"
    ds.VerifyingObserverSequence = Sequence([observer])
    hl7 = Dataset()
    hl7.ReferencedSOPClassUID, hl7.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.11", generate_uid()
    hl7.HL7InstanceIdentifier = HL7_ID
    hl7.RetrieveURI = f"https://{ARCHIVE_HOST}/hl7/{HL7_ID}"
    ds.HL7StructuredDocumentReferenceSequence = Sequence([hl7])
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = code("11528-7", "LN", "Radiology Report")
    ds.ContentSequence = Sequence([
        content_item("CONTAINS", "TEXT", ("121071", "DCM", "Finding"),
                     TextValue=f"Mrs Gwendolyn Quimbleton ({PATIENT_ID}) was seen by Dr Archibald Fennimore on "
                               f"4 March 2019; lesion unchanged."),
        content_item("HAS OBS CONTEXT", "PNAME", ("121008", "DCM", "Person Observer Name"), PersonName=PHYSICIAN),
        content_item("HAS OBS CONTEXT", "DATE", ("111060", "DCM", "Study Date"), Date=REPORT_DATE),
        content_item("HAS OBS CONTEXT", "UIDREF", ("110180", "DCM", "Study Instance UID"), UID=image.StudyInstanceUID),
    ])
    return part10(ds, BASIC_TEXT_SR)


def key_objects(study_uid, image):
    """A Key Object Selection whose evidence names the hospital's archive by URL, AE and UID."""
    ds = Dataset()
    patient_and_study(ds, study_uid, "KO")
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = code("113000", "DCM", "Of Interest")
    referenced = Dataset()
    referenced.ReferencedSOPClassUID, referenced.ReferencedSOPInstanceUID = image.SOPClassUID, image.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = image.SeriesInstanceUID
    series.RetrieveURL = f"https://{ARCHIVE_HOST}/dicom-web/studies/{image.StudyInstanceUID}/series/{image.SeriesInstanceUID}"
    series.RetrieveAETitle = ARCHIVE_AE
    series.RetrieveLocationUID = generate_uid()
    series.ReferencedSOPSequence = Sequence([referenced])
    evidence = Dataset()
    evidence.StudyInstanceUID = image.StudyInstanceUID
    evidence.ReferencedSeriesSequence = Sequence([series])
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([evidence])
    ds.ContentTemplateSequence = Sequence([Dataset()])
    ds.ContentTemplateSequence[0].MappingResource, ds.ContentTemplateSequence[0].TemplateIdentifier = "DCMR", "2010"
    ds.ContentSequence = Sequence([
        content_item("CONTAINS", "IMAGE", ("113000", "DCM", "Of Interest"), ReferencedSOPSequence=Sequence([copy.deepcopy(referenced)])),
        content_item("CONTAINS", "TEXT", ("113012", "DCM", "Key Object Description"),
                     TextValue=f"Key image of Gwendolyn Quimbleton for Dr Fennimore"),
    ])
    return part10(ds, KEY_OBJECT_SELECTION), series.RetrieveLocationUID


def image_with_trailing_data(study_uid):
    """pydicom's RLE-compressed MR with a private element and a digital signature after its
    pixel data (groups 7FE1 and FFFA sort after 7FE0)."""
    ds = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))
    patient_and_study(ds, study_uid, "MR")
    # A description naming an operator with a two-letter surname, and dates as people write
    # them: what Clean Descriptors must find in free text.
    ds.OperatorsName = "Ng^Bo"
    ds.SeriesDescription = DESCRIPTION
    ds.private_block(0x7FE1, "QUIMBLETON PACS", create=True).add_new(0x01, "LO", f"{PATIENT_NAME} {PATIENT_ID}")
    signature = Dataset()
    signature.MACIDNumber = 1
    signature.DigitalSignatureUID = generate_uid()
    signature.DigitalSignatureDateTime = REPORT_DATE + "120000"
    signature.CertificateType = "X509_1993_SIG"
    signature.CertificateOfSigner = f"CN={PHYSICIAN},O=Quimbleton Hospital".encode()
    signature.Signature = f"signed for {PATIENT_ID}".encode()
    ds.DigitalSignaturesSequence = Sequence([signature])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue(), ds


def presentation_state(study_uid, image):
    """A grayscale presentation state whose annotation text names the patient."""
    ds = Dataset()
    patient_and_study(ds, study_uid, "PR")
    ds.ContentLabel, ds.ContentDescription, ds.PresentationCreationDate = "NOTE", "", REPORT_DATE
    ds.PresentationCreationTime, ds.ContentCreatorName = "101700", PHYSICIAN
    referenced = Dataset()
    referenced.ReferencedSOPClassUID, referenced.ReferencedSOPInstanceUID = image.SOPClassUID, image.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID, series.ReferencedImageSequence = image.SeriesInstanceUID, Sequence([referenced])
    ds.ReferencedSeriesSequence = Sequence([series])
    text = Dataset()
    text.UnformattedTextValue = f"Gwendolyn Quimbleton {PATIENT_ID}"
    text.AnchorPointAnnotationUnits, text.AnchorPoint, text.AnchorPointVisibility = "PIXEL", [10.0, 10.0], "N"
    annotation = Dataset()
    annotation.GraphicLayer = "NOTES"
    annotation.ReferencedImageSequence = Sequence([copy.deepcopy(referenced)])
    annotation.TextObjectSequence = Sequence([text])
    ds.GraphicAnnotationSequence = Sequence([annotation])
    layer = Dataset()
    layer.GraphicLayer, layer.GraphicLayerOrder = "NOTES", 1
    ds.GraphicLayerSequence = Sequence([layer])
    return part10(ds, GRAYSCALE_PS)


def make():
    """The corpus: a list of Part-10 files (bytes) of one study, and the planted values with
    the source UIDs added."""
    study_uid = generate_uid()
    image_bytes, image = image_with_trailing_data(study_uid)
    kos, location_uid = key_objects(study_uid, image)
    files = [image_bytes, report(study_uid, image), kos, presentation_state(study_uid, image)]
    planted = set(PLANTED) | {study_uid, location_uid, image.SeriesInstanceUID, image.SOPInstanceUID}
    for data in files:
        ds = pydicom.dcmread(io.BytesIO(data))
        planted |= {ds.SeriesInstanceUID, ds.SOPInstanceUID}
    return files, planted


class Loaded:
    """The corpus loaded into an Orthanc site; `remove()` takes it out again."""

    def __init__(self, orthanc_url):
        self.orthanc_url = orthanc_url
        self.files, self.planted = make()
        self.ids = []
        for data in self.files:
            answer = requests.post(f"{orthanc_url}/instances", data=data, timeout=30)
            answer.raise_for_status()
            self.ids.append(answer.json()["ID"])

    def remove(self):
        for orthanc_id in self.ids:
            requests.delete(f"{self.orthanc_url}/instances/{orthanc_id}", timeout=30)
