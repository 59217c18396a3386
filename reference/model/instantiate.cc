/* Explicit instantiations of the reference model for float and double, so that the
 * templates compile once instead of in every translation unit. */
#include "reference/model/transformer.h"

namespace pb::ref {

template Loss<float> model_forward_backward(ModelParams<float>&, const ModelParams<float>&, const ModelConfig&,
                                            const Batch&, Index, Index, float);
template Loss<double> model_forward_backward(ModelParams<double>&, const ModelParams<double>&, const ModelConfig&,
                                             const Batch&, Index, Index, double);
template Loss<float> model_forward(const ModelParams<float>&, const ModelConfig&, const Batch&, Index, Index,
                                   Mat<float>*);
template Loss<double> model_forward(const ModelParams<double>&, const ModelConfig&, const Batch&, Index, Index,
                                    Mat<double>*);

}  // namespace pb::ref
