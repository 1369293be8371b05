"""A small DICOM archive on pynetdicom, for the tests: C-ECHO, Study Root C-FIND (STUDY, SERIES
and IMAGE levels) and C-GET over the files given, each file sent in the transfer syntax it is
stored in, as an archive that knows HTJ2K does (Orthanc 1.10 and dcmqrscp 3.6.7, built on DCMTK
3.6.7, store HTJ2K files but cannot send them).

    python3 dimse_archive.py --ae ARCHIVE --port PORT [--get-ignores-instances | --get-takes-one]
                             [--get-ignores-study] [--find-limit N] [--finds-answered N] FILE...

With --get-ignores-instances it answers an IMAGE-level C-GET with every instance of the series,
whatever SOP Instance UIDs it names; with --get-takes-one, with the first instance of a list of
them alone, reporting success; with --get-ignores-study, with every instance it holds whatever
study is asked for (another patient's among them); with --find-limit, a C-FIND with its first N matches, reporting
success: as some PACS do. With --finds-answered N, it answers its first N C-FINDs and fails
each after them (Out of Resources, A700): a PACS that fails between a search and the queries
that complete its results.

Matching is by UID (single or list) and universal otherwise; the roll-ups a gateway asks for
(NumberOfStudyRelatedSeries/Instances, NumberOfSeriesRelatedInstances, ModalitiesInStudy,
SOPClassesInStudy) are computed from the files. Listens on 127.0.0.1 only.
"""

import argparse
import pathlib
import sys

import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203", "1.2.840.10008.1.2.5",
]
LEVEL_KEY = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}


def uids(value):
    """The UIDs of a key's value: one, or a list (a multi-valued element)."""
    if isinstance(value, MultiValue):
        return [str(v) for v in value]
    return [uid for uid in str(value or "").split("\\") if uid]


def matches(ds, identifier):
    """Whether a file's data set matches the UID keys of an identifier (others: universal)."""
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        wanted = uids(identifier.get(key, ""))
        if wanted and str(ds.get(key, "")) not in wanted:
            return False
    return True


def answer(level, group, identifier):
    """The response identifier for one entity (the files of one study, series or instance)."""
    first = group[0]
    result = Dataset()
    result.QueryRetrieveLevel = level
    for element in identifier:
        keyword = element.keyword
        if not keyword or keyword == "QueryRetrieveLevel":
            continue
        if keyword == "NumberOfStudyRelatedInstances" or keyword == "NumberOfSeriesRelatedInstances":
            setattr(result, keyword, len(group))
        elif keyword == "NumberOfStudyRelatedSeries":
            result.NumberOfStudyRelatedSeries = len({ds.SeriesInstanceUID for ds in group})
        elif keyword == "ModalitiesInStudy":
            result.ModalitiesInStudy = sorted({str(ds.get("Modality", "")) for ds in group} - {""})
        elif keyword == "SOPClassesInStudy":
            result.SOPClassesInStudy = sorted({ds.SOPClassUID for ds in group})
        elif keyword in first:
            result[element.tag] = first[element.tag]
        else:
            result[element.tag] = pydicom.DataElement(element.tag, element.VR, None)
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ae", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--get-ignores-instances", action="store_true")
    parser.add_argument("--get-takes-one", action="store_true")
    parser.add_argument("--get-ignores-study", action="store_true")
    parser.add_argument("--find-limit", type=int, default=0)
    parser.add_argument("--finds-answered", type=int, default=-1)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    held = [(pathlib.Path(f), pydicom.dcmread(f, stop_before_pixels=True)) for f in args.files]

    finds = [0]

    def on_find(event):
        finds[0] += 1
        if 0 <= args.finds_answered < finds[0]:
            yield 0xA700, None
            return
        identifier = event.identifier
        level = str(identifier.get("QueryRetrieveLevel", ""))
        if level not in LEVEL_KEY:
            yield 0xC000, None
            return
        groups = {}
        for _, ds in held:
            if matches(ds, identifier):
                groups.setdefault(str(ds.get(LEVEL_KEY[level])), []).append(ds)
        answered = list(groups.values())
        if args.find_limit:
            answered = answered[:args.find_limit]
        for group in answered:
            yield 0xFF00, answer(level, group, identifier)

    def on_get(event):
        identifier = event.identifier
        if args.get_ignores_instances and "SOPInstanceUID" in identifier:
            del identifier.SOPInstanceUID
        if args.get_ignores_study and "StudyInstanceUID" in identifier:
            del identifier.StudyInstanceUID
        if args.get_takes_one and "SOPInstanceUID" in identifier:
            identifier.SOPInstanceUID = uids(identifier.SOPInstanceUID)[:1]
        chosen = [path for path, ds in held if matches(ds, identifier)]
        yield len(chosen)
        for path in chosen:
            yield 0xFF00, pydicom.dcmread(path)

    ae = AE(ae_title=args.ae)
    ae.add_supported_context(Verification)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in sorted({ds.SOPClassUID for _, ds in held}):
        ae.add_supported_context(sop_class, TRANSFER_SYNTAXES, scp_role=True, scu_role=False)
    ae.start_server(("127.0.0.1", args.port), block=True,
                    evt_handlers=[(evt.EVT_C_FIND, on_find), (evt.EVT_C_GET, on_get)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
