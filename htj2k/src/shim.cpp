// A C interface to OpenJPH's HTJ2K decoder for the Rust crate beside it: read a codestream's
// header, and decode it whole into a caller's buffer of samples interleaved by pixel. Every
// C++ exception stays in here: each function returns 0 or writes the reason into `error`.

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <openjph/ojph_arch.h>
#include <openjph/ojph_codestream.h>
#include <openjph/ojph_file.h>
#include <openjph/ojph_mem.h>
#include <openjph/ojph_message.h>
#include <openjph/ojph_params.h>

namespace {

// OpenJPH reports an error through a process-wide handler that prints it to a stream and
// throws std::runtime_error("ojph error"); warnings and information are printed too. Its
// streams go to /dev/null here (it does not accept none), so a PACS's bad codestream is not
// written to the gateway's output; the caller gets the error as a return value.
void configure_messages() {
  static std::once_flag once;
  std::call_once(once, [] {
    FILE* nowhere = std::fopen("/dev/null", "w");
    if (nowhere == nullptr) return;
    ojph::set_error_stream(nowhere);
    ojph::set_warning_stream(nowhere);
    ojph::set_info_stream(nowhere);
  });
}

void report(char* error, size_t error_len, const char* text) {
  if (error_len == 0) return;
  std::strncpy(error, text, error_len - 1);
  error[error_len - 1] = '\0';
}

struct Geometry {
  uint32_t width, height, components, bit_depth;
  int is_signed;
};

// The image's geometry; every component full size with the same depth and signedness.
Geometry geometry_of(ojph::codestream& codestream) {
  ojph::param_siz siz = codestream.access_siz();
  Geometry g;
  g.width = siz.get_image_extent().x - siz.get_image_offset().x;
  g.height = siz.get_image_extent().y - siz.get_image_offset().y;
  g.components = siz.get_num_components();
  if (g.components == 0) throw std::runtime_error("the codestream has no component");
  g.bit_depth = siz.get_bit_depth(0);
  g.is_signed = siz.is_signed(0) ? 1 : 0;
  for (uint32_t c = 0; c < g.components; ++c) {
    ojph::point sampling = siz.get_downsampling(c);
    if (sampling.x != 1 || sampling.y != 1)
      throw std::runtime_error("a component is subsampled, which DICOM does not use here");
    if (siz.get_bit_depth(c) != g.bit_depth || (siz.is_signed(c) ? 1 : 0) != g.is_signed)
      throw std::runtime_error("the components differ in depth or sign");
    if (siz.get_recon_width(c) != g.width || siz.get_recon_height(c) != g.height)
      throw std::runtime_error("a component differs in size from the image");
  }
  return g;
}

// Opens the codestream `data` and reads its headers; its geometry.
Geometry read_headers(const uint8_t* data, size_t len, ojph::mem_infile& file, ojph::codestream& codestream) {
  file.open(data, len);
  codestream.read_headers(&file);
  return geometry_of(codestream);
}

}  // namespace

extern "C" {

// The geometry of the codestream `data` (`len` bytes).
int htj2k_info(const uint8_t* data, size_t len, uint32_t* width, uint32_t* height, uint32_t* components,
               uint32_t* bit_depth, int* is_signed, char* error, size_t error_len) {
  configure_messages();
  try {
    ojph::mem_infile file;
    ojph::codestream codestream;
    Geometry g = read_headers(data, len, file, codestream);
    *width = g.width;
    *height = g.height;
    *components = g.components;
    *bit_depth = g.bit_depth;
    *is_signed = g.is_signed;
    return 0;
  } catch (const std::exception& e) {
    report(error, error_len, e.what());
  } catch (...) {
    report(error, error_len, "OpenJPH failed");
  }
  return 1;
}

// Decodes the codestream into `out`: width x height x components samples interleaved by pixel,
// each `bytes_per_sample` (1 or 2) little-endian bytes, clamped to the codestream's range.
// `out_len` must be exactly that many bytes.
int htj2k_decode(const uint8_t* data, size_t len, uint8_t* out, size_t out_len, uint32_t bytes_per_sample,
                 char* error, size_t error_len) {
  configure_messages();
  try {
    ojph::mem_infile file;
    ojph::codestream codestream;
    Geometry g = read_headers(data, len, file, codestream);
    if (bytes_per_sample != 1 && bytes_per_sample != 2)
      throw std::runtime_error("samples of other than one or two bytes");
    if (g.bit_depth > 8 * bytes_per_sample)
      throw std::runtime_error("the codestream's samples are deeper than the data set's");
    size_t row_samples = static_cast<size_t>(g.width) * g.components;
    if (out_len != row_samples * g.height * bytes_per_sample)
      throw std::runtime_error("the buffer is not the size of the image");
    int64_t low = g.is_signed ? -(int64_t(1) << (g.bit_depth - 1)) : 0;
    int64_t high = g.is_signed ? (int64_t(1) << (g.bit_depth - 1)) - 1 : (int64_t(1) << g.bit_depth) - 1;
    codestream.create();
    // Lines come component by component within a row, or each component's rows in turn
    // (planar): either way, each component's next row is known.
    std::vector<uint32_t> next_row(g.components, 0);
    for (size_t pulled = 0; pulled < static_cast<size_t>(g.height) * g.components; ++pulled) {
      uint32_t component = 0;
      ojph::line_buf* line = codestream.pull(component);
      if (line == nullptr || component >= g.components || next_row[component] >= g.height)
        throw std::runtime_error("OpenJPH gave a line outside the image");
      uint32_t row = next_row[component]++;
      uint8_t* at = out + (static_cast<size_t>(row) * row_samples + component) * bytes_per_sample;
      const ojph::si32* samples = line->i32;
      for (uint32_t x = 0; x < g.width; ++x) {
        int64_t v = samples[x];
        v = v < low ? low : (v > high ? high : v);
        uint16_t bits = static_cast<uint16_t>(v);
        at[0] = static_cast<uint8_t>(bits & 0xFF);
        if (bytes_per_sample == 2) at[1] = static_cast<uint8_t>(bits >> 8);
        at += static_cast<size_t>(g.components) * bytes_per_sample;
      }
    }
    codestream.close();
    return 0;
  } catch (const std::exception& e) {
    report(error, error_len, e.what());
  } catch (...) {
    report(error, error_len, "OpenJPH failed");
  }
  return 1;
}

}  // extern "C"
