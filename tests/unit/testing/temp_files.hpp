// Test helper: a pair of anonymous temporary files standing in for a command's standard
// input and output, so that a runner taking FILE* can be called and its output read back.
#pragma once

#include <cstdio>
#include <string>

namespace flowmark::testing {

struct TempFiles {
  std::FILE* in = std::tmpfile();
  std::FILE* out = std::tmpfile();
  TempFiles() = default;
  TempFiles(const TempFiles&) = delete;
  TempFiles& operator=(const TempFiles&) = delete;
  ~TempFiles() {
    if (in) std::fclose(in);
    if (out) std::fclose(out);
  }
  // Everything written to `out` so far.
  std::string output() const {
    std::fflush(out);
    std::rewind(out);
    std::string s;
    char buf[4096];
    while (std::size_t n = std::fread(buf, 1, sizeof buf, out)) s.append(buf, n);
    return s;
  }
};

}  // namespace flowmark::testing
