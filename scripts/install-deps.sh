#!/usr/bin/env bash
# Installs what the demo, the tests and the benchmarks need, skipping what is already there:
# Orthanc with its DICOMweb plugin and DCMTK (Debian), reference image codecs (Debian), CMake
# for the JPEG-LS codec's build, pydicom (PyPI), curl, and the OHIF Viewer
# (npm) with Chromium (Debian) and Playwright (PyPI) that drive it in the browser test.
set -euo pipefail

need_apt=()
command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || need_apt+=(orthanc)
dpkg -s orthanc-dicomweb >/dev/null 2>&1 || need_apt+=(orthanc-dicomweb)
[ -x /usr/bin/dcmqrscp ] || need_apt+=(dcmtk)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
[ -x /usr/bin/time ] || need_apt+=(time)
[ -x /usr/bin/dciodvfy ] || need_apt+=(dicom3tools)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
# PostgreSQL (a throwaway cluster per test, no service) and HAProxy for the replicas test.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql)
[ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
# A C++ compiler: libfuzzer-sys compiles libFuzzer for the fuzz targets (scripts/fuzz.sh), and
# with CMake builds CharLS and libjpeg-turbo, codecs the gateway links.
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
# NASM: libjpeg-turbo's SIMD code, in the 12-bit JPEG decoder the gateway builds.
command -v nasm >/dev/null 2>&1 || need_apt+=(nasm)
# OpenJPH's headers and library: the gateway's HTJ2K decoder links it (crate htj2k).
[ -f /usr/include/openjph/ojph_codestream.h ] || need_apt+=(libopenjph-dev)
# Tesseract (its C API, the English model and its command line): the gateway finds burned-in
# text with it (crate ocr), and the burned-in tests read back what is left. Fonts: the
# synthetic burned-in corpus renders its text in them (tests/python/burned_in_corpus.py).
[ -f /usr/include/tesseract/capi.h ] || need_apt+=(libtesseract-dev)
compgen -G "/usr/share/tesseract-ocr/*/tessdata/eng.traineddata" >/dev/null || need_apt+=(tesseract-ocr-eng)
command -v tesseract >/dev/null 2>&1 || need_apt+=(tesseract-ocr)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)
[ -f /usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf ] || need_apt+=(fonts-liberation)
# Reference codecs outside the project: they encode the compressed test studies and decode
# what the gateway's decoders are compared with (GDCM for JPEG 2000, OpenJPEG's and OpenJPH's
# command lines; DCMTK's dcmcjpls and dcmdjpls come with dcmtk).
command -v gdcmconv >/dev/null 2>&1 || need_apt+=(libgdcm-tools)
command -v opj_decompress >/dev/null 2>&1 || need_apt+=(libopenjp2-tools)
command -v ojph_compress >/dev/null 2>&1 || need_apt+=(openjph-tools)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "installing Debian packages: ${need_apt[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    # The packages start no service here: the project starts Orthanc itself, one process per site.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

need_pip=()
python3 -c "import pydicom" >/dev/null 2>&1 || need_pip+=(pydicom)
python3 -c "import dicomweb_client" >/dev/null 2>&1 || need_pip+=(dicomweb-client)
python3 -c "import pytest" >/dev/null 2>&1 || need_pip+=(pytest)
python3 -c "import requests" >/dev/null 2>&1 || need_pip+=(requests)
python3 -c "import PIL" >/dev/null 2>&1 || need_pip+=(pillow)
python3 -c "import pynetdicom" >/dev/null 2>&1 || need_pip+=(pynetdicom)
python3 -c "import dicognito" >/dev/null 2>&1 || need_pip+=(dicognito)
python3 -c "import jwt" >/dev/null 2>&1 || need_pip+=(pyjwt)
python3 -c "import cryptography" >/dev/null 2>&1 || need_pip+=(cryptography)
python3 -c "import playwright" >/dev/null 2>&1 || need_pip+=(playwright)
python3 -c "import pyshacl" >/dev/null 2>&1 || need_pip+=(pyshacl)
if [ ${#need_pip[@]} -gt 0 ]; then
    # pydicom's test files are sample data; dicomweb-client is the reference DICOMweb client;
    # pyjwt and cryptography mint the test tokens and certificates; playwright drives Debian's
    # Chromium (it downloads no browser of its own unless asked to); pyshacl (with rdflib)
    # reads and validates the datasets' catalogue records.
    echo "installing Python packages: ${need_pip[*]}" >&2
    python3 -m pip install -q "${need_pip[@]}"
fi

"$(dirname "$0")/install-viewer.sh"
