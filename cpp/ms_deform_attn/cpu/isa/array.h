// The kernels' owned array. Included by kernels_isa.cpp inside its per-ISA namespace.

// An owned array of n values, the kernels' only container: a standard container's
// out-of-line members would be weak symbols that the linker may share across the ISA copies
// (see kernels_isa.cpp), while this one stays local to each copy's anonymous namespace.
template <typename T>
class Array {
 public:
  explicit Array(int64_t n, T fill = T()) : p_(new T[n > 0 ? n : 1]) {
    for (int64_t i = 0; i < n; ++i) p_[i] = fill;
  }
  ~Array() { delete[] p_; }
  Array(const Array&) = delete;
  Array& operator=(const Array&) = delete;
  T& operator[](int64_t i) { return p_[i]; }
  const T& operator[](int64_t i) const { return p_[i]; }
  T* data() { return p_; }
  const T* data() const { return p_; }

 private:
  T* p_;
};
