#!/usr/bin/env python3
"""Benchmark of burned-in text cleaning (docs/BURNED-IN.md): the synthetic corpus
(tests/python/burned_in_corpus.py) served by a pynetdicom archive, retrieved with the default
media type through a release gateway with `burned_in = "clean"`, cold (cleaned then) and again
(from the cache). Reported: how much of the identifying text is gone (box by box, and as
Tesseract's command line reads the output), how many other pixels changed, the time per image,
the same OCR run by hand on the same images (Tesseract's command line, as the gateway runs it:
sparse text, image and negative, at twice the size), and the gateway's peak RSS.

    cargo build --release -p gateway
    python3 scripts/bench-burned-in.py --count 24 --out bench-burned-in.md
"""

import argparse
import io
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy
import pydicom
import requests
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
import burned_in_corpus  # noqa: E402
from test_burned_in import AROUND, read_back, string_blanked, tokens  # noqa: E402

ACCEPT = {"Accept": 'multipart/related; type="application/dicom"'}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, process, what):
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None:
                sys.exit(f"{what} exited")
            time.sleep(0.05)
    sys.exit(f"{what} did not start")


def instances(response):
    boundary = response.headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"')
    parts = response.content.split(f"--{boundary}".encode())[1:-1]
    return [pydicom.dcmread(io.BytesIO(part.split(b"\r\n\r\n", 1)[1][:-2])) for part in parts]


def by_hand(pixels):
    """Seconds Tesseract's command line takes to read an image as the gateway reads it."""
    grey = pixels if pixels.ndim == 2 else pixels.mean(axis=2)
    grey = ((grey - grey.min()) * 255 / max(grey.max() - grey.min(), 1)).astype(numpy.uint8)
    started = time.perf_counter()
    for image in (grey, 255 - grey):
        png = io.BytesIO()
        Image.fromarray(image).resize((image.shape[1] * 2, image.shape[0] * 2), Image.NEAREST).save(png, "PNG")
        subprocess.run(["tesseract", "stdin", "stdout", "--psm", "11"], input=png.getvalue(), capture_output=True, check=True)
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out")
    args = parser.parse_args()
    binary = ROOT / "target" / "release" / "dicomweb-gateway"
    if not binary.exists():
        sys.exit(f"{binary} is missing: cargo build --release -p gateway")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench-burned-in-"))
    truth = burned_in_corpus.make(tmp / "corpus", args.count, args.seed)
    archive_port, port, scp_port = free_port(), free_port(), free_port()
    archive = subprocess.Popen([sys.executable, str(ROOT / "tests" / "python" / "dimse_archive.py"), "--ae", "BIARCHIVE",
                                "--port", str(archive_port), *(str(tmp / "corpus" / n) for n in truth)],
                               stderr=subprocess.DEVNULL)
    wait_for(archive_port, archive, "the archive")
    config = tmp / "gateway.toml"
    config.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}/dicom-web"
[dimse]
ae_title = "BENCHBI"
listen = "127.0.0.1:{scp_port}"
[[sites]]
id = "archive"
ae_title = "BIARCHIVE"
address = "127.0.0.1:{archive_port}"
retrieve = "c-get"
timeout = "120s"
[auth]
mode = "none"
[deid]
profile = "basic"
key_file = "{tmp}/deid.key"
state_dir = "{tmp}/state"
burned_in = "clean"
[cache]
search_ttl = "0s"
""")
    gateway = subprocess.Popen([str(binary), "serve", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(port, gateway, "the gateway")
        url = f"http://127.0.0.1:{port}/dicom-web"
        studies = [s["0020000D"]["Value"][0] for s in requests.get(f"{url}/studies").json()]
        by_number = {t["instance_number"]: name for name, t in truth.items()}
        cold, warm, hand, changed = [], [], [], []
        strings = blanked = half = readable_before = readable_after = 0
        for study in studies:
            started = time.perf_counter()
            first = requests.get(f"{url}/studies/{study}", headers=ACCEPT)
            cold.append(time.perf_counter() - started)
            started = time.perf_counter()
            again = requests.get(f"{url}/studies/{study}", headers=ACCEPT)
            warm.append(time.perf_counter() - started)
            assert first.status_code == again.status_code == 200, (first.status_code, again.status_code)
            [ours] = instances(first)
            name = by_number[int(ours.InstanceNumber)]
            source = pydicom.dcmread(tmp / "corpus" / name)
            original, cleaned = source.pixel_array.astype(numpy.int64), ours.pixel_array.astype(numpy.int64)
            hand.append(by_hand(source.pixel_array))
            differs = cleaned != original
            differs = differs.any(axis=-1) if differs.ndim == 3 else differs
            before, after = read_back(source.pixel_array), read_back(ours.pixel_array)
            text = numpy.zeros(differs.shape, dtype=bool)
            ink = numpy.asarray(Image.open(tmp / "corpus" / truth[name]["ink"]))
            for number, string in enumerate(truth[name]["strings"], start=1):
                left, top, right, bottom = string["box"]
                text[max(top - AROUND, 0):bottom + AROUND, max(left - AROUND, 0):right + AROUND] = True
                share = string_blanked(cleaned, ink, number)
                strings += 1
                blanked += share >= 0.999
                half += share >= 0.5
                wanted = tokens(string["text"])
                readable_before += any(t in before for t in wanted)
                readable_after += any(t in after for t in wanted)
            changed.append(differs[~text].mean())
        with open(f"/proc/{gateway.pid}/status") as status:
            peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
        archive.terminate()
        archive.wait(timeout=10)
    median = statistics.median
    report = f"""Corpus: {len(studies)} images (seed {args.seed}), {strings} identifying strings (names, record numbers, dates,
accession numbers) in {len(burned_in_corpus.FONTS)} fonts, 11 to 26 pixels, light on dark and dark on light, over
background and over image.

| measure | value |
|---|---|
| strings Tesseract's command line reads in the sources | {readable_before} of {strings} |
| strings it reads in the gateway's output | {readable_after} of {strings} |
| strings whose every pixel is blanked | {blanked} of {strings} ({blanked / strings:.0%}) |
| strings of which at least half the pixels are blanked | {half} of {strings} ({half / strings:.0%}) |
| other pixels changed (outside the boxes and {AROUND} px around them): mean, most | {statistics.mean(changed):.2%}, {max(changed):.2%} |
| time per image, cold (retrieved, decoded, text found, blanked, de-identified): median (min-max) | {median(cold):.2f} s ({min(cold):.2f}-{max(cold):.2f}) |
| time per image, again (from the cache) | {median(warm) * 1000:.1f} ms ({min(warm) * 1000:.1f}-{max(warm) * 1000:.1f}) |
| Tesseract's command line by hand on the same images, the same two passes: median | {median(hand):.2f} s |
| gateway peak RSS | {peak:.0f} MiB |
"""
    print(report)
    if args.out:
        pathlib.Path(args.out).write_text(report)


if __name__ == "__main__":
    main()
