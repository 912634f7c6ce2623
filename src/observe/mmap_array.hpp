// A fixed-size array of trivially copyable objects in anonymous memory: zero-filled,
// committed page by page as it is touched (a 1M-flow table costs nothing until flows
// arrive), and advised for transparent huge pages so that random access into a large
// table does not also miss the TLB on every packet.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <type_traits>
#include <utility>

namespace flowmark::observe::detail {

template <class T>
class MmapArray {
  static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>);

 public:
  MmapArray() = default;
  explicit MmapArray(std::size_t n) : n_(n) {
    if (n == 0) return;
    bytes_ = n * sizeof(T);
    constexpr std::size_t kHuge = std::size_t{2} << 20;
    if (bytes_ >= kHuge) {
      // Over-allocate by 2 MiB so that the array can start on a 2 MiB boundary.
      map_bytes_ = bytes_ + kHuge;
      void* p = mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) throw std::bad_alloc();
      map_ = p;
      const std::size_t misalign = reinterpret_cast<std::uintptr_t>(p) & (kHuge - 1);
      auto* aligned = static_cast<std::byte*>(p) + (misalign != 0 ? kHuge - misalign : 0);
      data_ = reinterpret_cast<T*>(aligned);
#ifdef MADV_HUGEPAGE
      madvise(aligned, bytes_, MADV_HUGEPAGE);
#endif
    } else {
      map_bytes_ = bytes_;
      void* p = mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) throw std::bad_alloc();
      map_ = p;
      data_ = static_cast<T*>(p);
    }
  }
  ~MmapArray() { release(); }
  MmapArray(const MmapArray&) = delete;
  MmapArray& operator=(const MmapArray&) = delete;
  MmapArray(MmapArray&& o) noexcept { swap(o); }
  MmapArray& operator=(MmapArray&& o) noexcept {
    if (this != &o) {
      release();
      swap(o);
    }
    return *this;
  }

  T& operator[](std::size_t i) noexcept { return data_[i]; }
  const T& operator[](std::size_t i) const noexcept { return data_[i]; }
  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return n_; }

  // Back to all zeroes. Large arrays give their pages back (they read as zero again).
  void zero() noexcept {
    if (bytes_ == 0) return;
    if (bytes_ >= (std::size_t{1} << 20) && madvise(map_, map_bytes_, MADV_DONTNEED) == 0) return;
    std::memset(static_cast<void*>(data_), 0, bytes_);
  }

 private:
  void release() noexcept {
    if (map_) munmap(map_, map_bytes_);
    map_ = nullptr;
    data_ = nullptr;
    n_ = bytes_ = map_bytes_ = 0;
  }
  void swap(MmapArray& o) noexcept {
    std::swap(map_, o.map_);
    std::swap(data_, o.data_);
    std::swap(n_, o.n_);
    std::swap(bytes_, o.bytes_);
    std::swap(map_bytes_, o.map_bytes_);
  }

  void* map_ = nullptr;
  T* data_ = nullptr;
  std::size_t n_ = 0, bytes_ = 0, map_bytes_ = 0;
};

}  // namespace flowmark::observe::detail
