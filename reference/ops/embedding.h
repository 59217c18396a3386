/* Token embedding lookup.
 *
 *   forward : Y[t, :] = E[tok[t], :]          E (V, H), tok (N), Y (N, H)
 *   backward: dE[tok[t], :] += dY[t, :]       scatter-add; a token seen twice adds twice
 */
#pragma once

#include "reference/common/error.h"
#include "reference/common/tensor.h"

namespace pb::ref {

template <class T>
void embedding_forward(Mat<T>& y, const Tokens& tok, const Mat<T>& table) {
  y.resize(Index(tok.size()), table.cols());  // (N, H)
  for (size_t t = 0; t < tok.size(); ++t) {
    PB_REQUIRE(tok[t] >= 0 && tok[t] < table.rows(), "token id ", tok[t], " outside vocabulary of ",
               table.rows());
    y.row(Index(t)) = table.row(Index(tok[t]));
  }
}

template <class T>
void embedding_backward(Mat<T>& dtable, const Mat<T>& dy, const Tokens& tok) {
  for (size_t t = 0; t < tok.size(); ++t) dtable.row(Index(tok[t])) += dy.row(Index(t));
}

}  // namespace pb::ref
