#!/usr/bin/env python3
"""Writes the data file of PS3.15 Table E.1-1 (Application Level Confidentiality Profile
Attributes) that de-identification reads: one line per attribute, its Basic Profile action and
the action of each option that changes it.

The source is the table as parsed from the standard's web edition by the dicom-standard project
(https://github.com/innolitics/dicom-standard, file standard/confidentiality_profile_attributes.json).
Usage: confidentiality-table.py SOURCE.json EDITION SOURCE_COMMIT > deid/data/ps3.15-table-e.1-1.tsv
"""

import json
import re
import sys

# Option columns of Table E.1-1, in the table's order: (the source's key, our option name).
OPTIONS = [
    ("rtnSafePrivOpt", "retain-safe-private"),
    ("rtnUIDsOpt", "retain-uids"),
    ("rtnDevIdOpt", "retain-device-identity"),
    ("rtnInstIdOpt", "retain-institution-identity"),
    ("rtnPatCharsOpt", "retain-patient-characteristics"),
    ("rtnLongFullDatesOpt", "retain-longitudinal-full-dates"),
    ("rtnLongModifDatesOpt", "retain-longitudinal-modified-dates"),
    ("cleanDescOpt", "clean-descriptors"),
    ("cleanStructContOpt", "clean-structured-content"),
    ("cleanGraphOpt", "clean-graphics"),
]


def tag_of(text):
    """`(0010,0010)` -> `00100010`; `(60XX,3000)` -> `60XX3000` (repeating groups); the row of
    private attributes, `(gggg,eeee) where gggg is odd`, -> `PRIVATE`."""
    match = re.fullmatch(r"\(([0-9A-Fa-fXx]{4}),([0-9A-Fa-fXx]{4})\)", text.strip())
    if match:
        return (match.group(1) + match.group(2)).upper()
    if "odd" in text.lower():
        return "PRIVATE"
    raise SystemExit(f"unexpected tag {text!r}")


def main():
    source, edition, commit = sys.argv[1:4]
    with open(source) as f:
        rows = json.load(f)
    print(f"# DICOM PS3.15 {edition}, Table E.1-1: Application Level Confidentiality Profile Attributes.")
    print(f"# Parsed from the standard's web edition by innolitics/dicom-standard (commit {commit});")
    print("# written by scripts/confidentiality-table.py. Columns: tag, basic profile action, then the")
    print("# action of each option (empty: the option does not change it), then the attribute's name.")
    print("\t".join(["tag", "basic"] + [name for _, name in OPTIONS] + ["name"]))
    for row in sorted(rows, key=lambda r: r["tag"].upper()):
        tag = tag_of(row["tag"])
        name = " ".join(row["name"].split())
        cells = [tag, row["basicProfile"].strip()] + [row.get(key, "").strip() for key, _ in OPTIONS] + [name]
        print("\t".join(cells))


if __name__ == "__main__":
    main()
