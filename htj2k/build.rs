//! Builds the C++ shim over OpenJPH (Debian's libopenjph-dev: headers in /usr/include/openjph)
//! and links the library.

fn main() {
    println!("cargo:rerun-if-changed=src/shim.cpp");
    cc::Build::new()
        .cpp(true)
        .file("src/shim.cpp")
        .flag_if_supported("-std=c++14")
        .opt_level(3)
        .warnings(true)
        .compile("htj2k_shim");
    println!("cargo:rustc-link-lib=openjph");
}
