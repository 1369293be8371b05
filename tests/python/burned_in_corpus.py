"""A corpus of images with identifying text burned into their pixels, made for the burned-in
text tests and benchmark (docs/BURNED-IN.md): ultrasound-like and secondary-capture-like
images with names, record numbers, dates and accession numbers rendered in several fonts,
sizes, contrasts and positions, each written as a DICOM file of a study of its own, with what
was written where.

    python3 tests/python/burned_in_corpus.py --out DIR [--count 24] [--seed 7]

writes DIR/NNN.dcm, DIR/NNN.ink.png (each string's pixels, numbered 1, 2, ... in the order of
its strings: the ink that was drawn, where the box also holds image) and DIR/truth.json: for
each file its StudyInstanceUID, its InstanceNumber (which survives de-identification), its ink
file and every string rendered into it with its box (left, top, right, bottom in pixels). The same seed makes the
same corpus.
"""

import argparse
import json
import pathlib
import random

import numpy
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import FileMetaDataset
from pydicom.uid import RLELossless, generate_uid

FONTS = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationMono-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSerif-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSansNarrow-Regular.ttf",
]
GIVEN = ["Jane", "Hans", "Marta", "Pieter", "Ana", "Luca", "Ingrid", "Tomasz", "Eva", "Jorge"]
FAMILY = ["Doe", "Mueller", "Kowalski", "Jansen", "Rossi", "Garcia", "Lindqvist", "Dubois", "Novak", "Silva"]
US_CLASS = "1.2.840.10008.5.1.4.1.1.6.1"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


def identifiers(rng):
    """The identifying strings of one patient's image, as devices print them."""
    given, family = rng.choice(GIVEN), rng.choice(FAMILY)
    year, month, day = rng.randint(1940, 2005), rng.randint(1, 12), rng.randint(1, 28)
    name = rng.choice([f"{family.upper()}^{given.upper()}", f"{family}, {given}", f"{given} {family}"])
    mrn = rng.choice(["MRN ", "ID: ", "PID "]) + str(rng.randint(10_000_000, 99_999_999))
    birth = rng.choice([f"{year}-{month:02}-{day:02}", f"{day:02}/{month:02}/{year}", f"DOB {day:02}.{month:02}.{year}"])
    accession = f"ACC {rng.randint(100_000, 999_999)}"
    return [name, mrn, birth, accession]


def ultrasound(rng, width, height):
    """A dark image with a speckled fan-shaped sector, as an ultrasound screen."""
    y, x = numpy.mgrid[0:height, 0:width]
    apex_x, apex_y = width / 2, height * 0.12
    angle = numpy.arctan2(x - apex_x, y - apex_y)
    radius = numpy.hypot(x - apex_x, y - apex_y)
    inside = (numpy.abs(angle) < 0.6) & (radius > height * 0.05) & (radius < height * 0.85)
    speckle = numpy.random.default_rng(rng.randint(0, 2**31)).gamma(2.0, 30.0, size=(height, width))
    image = numpy.where(inside, numpy.clip(speckle + 20, 0, 220), 0)
    return image.astype(numpy.uint8)


def screen(rng, width, height):
    """A grey user-interface screen with a dark image area, as a secondary capture."""
    image = numpy.full((height, width), rng.randint(170, 220), dtype=numpy.uint8)
    top, left = int(height * 0.15), int(width * 0.2)
    inner = numpy.random.default_rng(rng.randint(0, 2**31)).normal(80, 25, size=(height - top - 20, width - left - 20))
    image[top:height - 20, left:width - 20] = numpy.clip(inner, 0, 255).astype(numpy.uint8)
    return image


def render(rng, kind, colour):
    """One image: (pixels as a PIL image, [(text, box)])."""
    width, height = (640, 480) if kind == "us" else rng.choice([(800, 600), (1024, 768)])
    grey = ultrasound(rng, width, height) if kind == "us" else screen(rng, width, height)
    image = Image.fromarray(grey).convert("RGB" if colour else "L")
    draw = ImageDraw.Draw(image)
    # The ink of each string alone, to tell its pixels from the image's.
    ink = Image.new("L", (width, height))
    ink_draw = ImageDraw.Draw(ink)
    truth, taken = [], []
    for text in identifiers(rng):
        font = ImageFont.truetype(rng.choice(FONTS), rng.randint(11, 26))
        for _ in range(50):
            left, top = rng.randint(4, width - 260), rng.randint(4, height - 40)
            box = draw.textbbox((left, top), text, font=font)
            if box[2] < width - 2 and not any(box[0] < t[2] + 6 and t[0] < box[2] + 6 and box[1] < t[3] + 6 and t[1] < box[3] + 6 for t in taken):
                break
        # Light on dark, as most devices print, or dark on light, at a contrast of its own.
        background = grey[max(box[1], 0):box[3], max(box[0], 0):box[2]].mean()
        level = rng.randint(150, 255) if background < 128 else rng.randint(1, 80)
        fill = (level, level, rng.randint(0, level)) if colour and rng.random() < 0.5 else ((level,) * 3 if colour else level)
        draw.text((left, top), text, font=font, fill=fill)
        ink_draw.text((left, top), text, font=font, fill=len(truth) + 1)
        taken.append(box)
        truth.append({"text": text, "box": list(box)})
    return image, truth, ink


def dicom(image, kind, colour, study_uid, index):
    """The image as a DICOM data set of a study of its own, BurnedInAnnotation YES."""
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = US_CLASS if kind == "us" else SC_CLASS
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.PatientName, ds.PatientID = f"BURNED^IN{index:03}", f"BURNED-IN-{index:03}"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20240101", "120000", f"BI{index:05}"
    ds.Modality = "US" if kind == "us" else "OT"
    ds.Manufacturer = "Synthetic Burned-In Corpus"
    # The instance number says which image of the corpus this is (it survives de-identification).
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, index + 1
    ds.BurnedInAnnotation = "YES"
    pixels = numpy.asarray(image)
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
    if colour:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    # Every third image stored in RLE Lossless, as many ultrasound devices store theirs.
    if index % 3 == 2:
        ds.compress(RLELossless)
    return ds


def make(out, count, seed):
    """Writes the corpus into `out`; returns the truth it wrote."""
    rng = random.Random(seed)
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    truth = {}
    for index in range(count):
        kind = "us" if index % 2 == 0 else "sc"
        colour = index % 4 in (0, 3)
        image, strings, ink = render(rng, kind, colour)
        study_uid = generate_uid()
        path = out / f"{index:03}.dcm"
        dicom(image, kind, colour, study_uid, index).save_as(path, enforce_file_format=True)
        ink.save(out / f"{index:03}.ink.png")
        truth[path.name] = {"study_uid": study_uid, "instance_number": index + 1, "strings": strings,
                            "ink": f"{index:03}.ink.png"}
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    truth = make(args.out, args.count, args.seed)
    print(f"{len(truth)} images, {sum(len(t['strings']) for t in truth.values())} strings, in {args.out}")


if __name__ == "__main__":
    main()
