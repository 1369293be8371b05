#!/usr/bin/env python3
"""Cross-checks the data file of Table E.1-1 against the table in the standard's own text
(Part 15 Annex E as reStructuredText, chapter_E.rst): attributes in one and not the other, and
attributes whose Basic Profile action differs. Editions differ, so some differences are
expected; each is printed for a person to judge.

Usage: check-confidentiality-table.py chapter_E.rst deid/data/ps3.15-table-e.1-1.tsv
"""

import re
import sys


def text_table(path):
    lines = open(path).read().splitlines()
    start = next(i for i, l in enumerate(lines) if l.strip() == ".. table:: Application Level Confidentiality Profile Attributes")
    rows, cells, seen_header = {}, None, False
    for line in lines[start + 1:]:
        text = line.strip()
        if not text:
            if cells is not None or seen_header:
                if seen_header and cells is None:
                    break
            continue
        if text.startswith("+"):
            if text.startswith("+="):
                seen_header = True
                cells = None
                continue
            if seen_header and cells:
                tag = re.sub(r"\s", "", cells[1]).upper()
                match = re.fullmatch(r"\(([0-9A-FX]{4}),([0-9A-FX]{4})\)", tag)
                key = match.group(1) + match.group(2) if match else ("PRIVATE" if "ODD" in tag else tag)
                rows[key] = re.sub(r"\s", "", cells[4])
            cells = None
            continue
        if text.startswith("|"):
            parts = text.strip("|").split("|")
            if cells is None:
                cells = [""] * len(parts)
            for i, part in enumerate(parts):
                cells[i] += " " + part.strip()
    return rows


def data_file(path):
    rows = {}
    for line in open(path):
        if line.startswith("#") or line.startswith("tag\t"):
            continue
        cells = line.rstrip("\n").split("\t")
        rows[cells[0]] = cells[1]
    return rows


def main():
    standard, ours = text_table(sys.argv[1]), data_file(sys.argv[2])
    only_text = sorted(set(standard) - set(ours))
    only_ours = sorted(set(ours) - set(standard))
    differ = sorted(t for t in set(standard) & set(ours) if standard[t] != ours[t])
    print(f"text: {len(standard)} attributes; data file: {len(ours)}; in both: {len(set(standard) & set(ours))}")
    print(f"only in the text ({len(only_text)}): {' '.join(only_text)}")
    print(f"only in the data file ({len(only_ours)}): {' '.join(only_ours)}")
    print(f"basic action differs ({len(differ)}): " + " ".join(f"{t}:{standard[t]}->{ours[t]}" for t in differ))


if __name__ == "__main__":
    main()
