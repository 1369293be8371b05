//! Links Tesseract (Debian's libtesseract-dev: its C API in tesseract/capi.h).

fn main() {
    println!("cargo:rustc-link-lib=tesseract");
}
