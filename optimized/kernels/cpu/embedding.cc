/* CPU vocab-parallel embedding: this rank holds rows vocab_start .. vocab_start+V/TP-1
 * of the table; tokens outside give zero rows (the TP all-reduce / reduce-scatter then
 * sums the one non-zero contribution). Backward scatter-adds only owned rows. */
#include <cstring>

#include "optimized/kernels/cpu/cpu_kernels.h"
#include "reference/common/error.h"

namespace pb::cpu {

void embedding_forward(Tensor& y, const std::vector<int64_t>& tok, const Tensor& table, int64_t vocab_start, const Stream&) {
  const int64_t H = table.cols(), V = table.rows();
  PB_REQUIRE(y.rows() == int64_t(tok.size()) && y.cols() == H, "embedding_forward: y ", y.shape_str());
  for (size_t t = 0; t < tok.size(); ++t) {
    const int64_t r = tok[t] - vocab_start;
    float* dst = y.f32() + int64_t(t) * H;
    if (r >= 0 && r < V)
      std::memcpy(dst, table.f32() + r * H, size_t(H) * sizeof(float));
    else
      std::memset(dst, 0, size_t(H) * sizeof(float));
  }
}

void embedding_backward(Tensor& dtable, const Tensor& dy, const std::vector<int64_t>& tok, int64_t vocab_start, const Stream&) {
  const int64_t H = dtable.cols(), V = dtable.rows();
  auto d = as_mat(dtable);
  const auto g = as_mat(dy);
  for (size_t t = 0; t < tok.size(); ++t) {
    const int64_t r = tok[t] - vocab_start;
    if (r >= 0 && r < V) d.row(r) += g.row(int64_t(t));
  }
  (void)H;
}

// Index tensors: their host values.
void embedding_forward(Tensor& y, const IndexTensor& tok, const Tensor& table, int64_t vocab_start, const Stream& s) {
  embedding_forward(y, tok.host(), table, vocab_start, s);
}

void embedding_backward(Tensor& dtable, const Tensor& dy, const IndexTensor& tok, int64_t vocab_start,
                        const Stream& s) {
  embedding_backward(dtable, dy, tok.host(), vocab_start, s);
}

}  // namespace pb::cpu
