#!/usr/bin/env python3
"""Writes the data file of PS3.15 Table E.3.10-1 (Safe Private Attributes) that the
retain-safe-private option reads: one line per attribute, its group, its element within the
private block, the private creator, VR and meaning.

The source is the standard's text of Annex E as reStructuredText (chapter_E.rst of Part 15, as
converted by the chsasank/dicom_standard project).
Usage: safe-private-table.py chapter_E.rst EDITION SOURCE_COMMIT > deid/data/ps3.15-table-e.3.10-1.tsv
"""

import re
import sys


def rows(lines):
    """The rows of the first grid table titled "Safe Private Attributes"."""
    start = next(i for i, line in enumerate(lines) if line.strip() == ".. table:: Safe Private Attributes")
    cells, table_started = None, False
    for line in lines[start + 1:]:
        text = line.strip()
        if not text:
            if table_started:
                break
            continue
        if text.startswith("+"):
            table_started = True
            if cells is not None and any(cells):
                yield [" ".join(c.split()) for c in cells]
            cells = None
            continue
        if text.startswith("|"):
            parts = [p for p in text.strip("|").split("|")]
            if cells is None:
                cells = [""] * len(parts)
            for i, part in enumerate(parts):
                cells[i] += " " + part.strip()


def main():
    source, edition, commit = sys.argv[1:4]
    with open(source) as f:
        lines = f.read().splitlines()
    print(f"# DICOM PS3.15 {edition}, Table E.3.10-1: Safe Private Attributes (a sample list the standard gives).")
    print(f"# From the standard's text of Annex E as converted by chsasank/dicom_standard (commit {commit});")
    print("# written by scripts/safe-private-table.py. Columns: group, element within the private block,")
    print("# private creator, VR, meaning.")
    print("group\telement\tcreator\tvr\tmeaning")
    count = 0
    for cells in rows(lines):
        if cells[0].startswith("**"):
            continue  # the header row
        match = re.fullmatch(r"\(([0-9A-Fa-f]{4}),\s*xx([0-9A-Fa-f]{2})\)", cells[0])
        if not match:
            raise SystemExit(f"unexpected data element {cells[0]!r}")
        print("\t".join([match.group(1).upper(), match.group(2).upper(), cells[1], cells[2], cells[4]]))
        count += 1
    if count < 10:
        raise SystemExit(f"only {count} rows found")


if __name__ == "__main__":
    main()
