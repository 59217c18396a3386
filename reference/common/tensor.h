/* Tensor types of the reference.
 *
 * The reference keeps every tensor as a row-major Eigen matrix. Activations are
 * [tokens, features] with token row t = b*S + s (batch-major, as Hugging Face's
 * [B, S, H] flattened); heads are contiguous column blocks (head a of Q occupies
 * columns a*D .. a*D+D-1). Weights keep the Hugging Face / PyTorch nn.Linear layout
 * [out, in], so y = x W^T.
 */
#pragma once

#include <Eigen/Dense>
#include <cstdint>
#include <limits>
#include <vector>

namespace pb::ref {

template <class T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;

using Index = Eigen::Index;
using Tokens = std::vector<int64_t>;  // (B*S) token ids, row t = b*S + s

// A matrix of the given shape filled with quiet NaN: outputs start poisoned so that an
// element a kernel forgets to write shows up in every comparison.
template <class T>
Mat<T> nan_mat(Index rows, Index cols) {
  return Mat<T>::Constant(rows, cols, std::numeric_limits<T>::quiet_NaN());
}

// Positions 0..S-1 for each of B sequences of length S, row t = b*S + s.
inline std::vector<int64_t> sequence_positions(Index B, Index S) {
  std::vector<int64_t> pos(size_t(B * S));
  for (Index t = 0; t < B * S; ++t) pos[size_t(t)] = t % S;
  return pos;
}

// Positions 0..S-1 of one sequence (what attention takes per batch row).
inline std::vector<int64_t> iota_positions(Index S) { return sequence_positions(1, S); }

}  // namespace pb::ref
