/* The grids of multi-dimensional tensor parallelism over the TP group's t ranks (issue 17;
 * Colossal-AI's 2D, 2.5D and 3D tensor parallelism):
 *   1d    a line (Megatron-LM, arXiv 1909.08053)               t any
 *   2d    q x q, rank r = i q + j (row i, column j)            t = q^2   Optimus, Xu et al.,
 *                                                                        arXiv 2104.05343 (SUMMA)
 *   2.5d  d layers of q x q, r = k q^2 + i q + j (depth k)      t = d q^2 Tesseract, Wang et al.,
 *                                                                        arXiv 2105.14500
 *   3d    q x q x q, r = i + q j + q^2 k                       t = q^3   Bian et al.,
 *                                                                        arXiv 2105.14450
 * (the 2D and 3D numbering is Colossal-AI's legacy parallel_2d / parallel_3d: 2D's row holds
 * the hidden slices of one batch block; 3D's three groups vary j (its input group), i (weight)
 * and k (output)). A direction's group is the ranks that differ from r only in that
 * coordinate, ordered by it, so a rank's place in its group is its coordinate.
 */
#pragma once

#include <string>
#include <vector>

namespace pb {

enum class TpKind { OneD, TwoD, TwoHalfD, ThreeD };

struct TpGrid {
  TpKind kind = TpKind::OneD;
  int q = 1, d = 1;  // grid side; 2.5d's depth
  struct Coords {
    int i = 0, j = 0, k = 0;
    bool operator==(const Coords&) const = default;
  };
  enum class Dir { I, J, K };
  // The grid of tp ranks for a kind name ("1d", "2d", "2.5d", "3d"); depth: 2.5d's d. Throws
  // pb::Error with one line when tp is not a square (2d), q^2 d (2.5d) or a cube (3d).
  static TpGrid of(const std::string& kind, int tp, int depth = 1);
  int size() const;  // t
  // How a rank's share of the model divides (1d: q = t): the micro-batch's sequences over
  // row_blocks (1d 1, 2d q, 2.5d q d, 3d q^2), the hidden width outside the linears over
  // hidden_blocks (1d 1, else q), the heads, kv heads, ffn and vocabulary over q.
  int row_blocks() const;
  int hidden_blocks() const { return kind == TpKind::OneD ? 1 : q; }
  Coords coords(int r) const;
  int rank(const Coords& c) const;
  // The TP ranks of r's group along dir, in order of that coordinate (r's place = its coordinate).
  std::vector<int> group(Dir dir, int r) const;
};

}  // namespace pb
